// Binary min-heap of waiters that also removes any element in O(log n): each waiter stores its own
// position in the heap, so a cancelled or timed-out waiter is found without a search.
#pragma once

#include <algorithm>
#include <cstddef>
#include <utility>
#include <vector>

#include "flypg/replication/detail/waiter.hpp"

namespace flypg::replication::detail {

/// Orders waiters by target LSN, then by registration (FIFO among equal targets).
struct by_target {
    bool operator()(const waiter* a, const waiter* b) const noexcept {
        return a->target != b->target ? a->target < b->target : a->sequence < b->sequence;
    }
};

/// Orders waiters by deadline, then by registration.
struct by_deadline {
    bool operator()(const waiter* a, const waiter* b) const noexcept {
        return a->deadline != b->deadline ? a->deadline < b->deadline : a->sequence < b->sequence;
    }
};

/// An indexed min-heap of `waiter*` ordered by `Less`, which keeps each element's position in the
/// member `Slot` (waiter::no_slot while outside the heap). A waiter may sit in several such heaps
/// at once, one slot member per heap. Does not own the waiters.
template <class Less, std::size_t waiter::*Slot>
class waiter_heap {
  public:
    bool empty() const noexcept { return items_.empty(); }
    std::size_t size() const noexcept { return items_.size(); }
    /// The least element. Precondition: !empty().
    waiter* top() const noexcept { return items_.front(); }

    bool contains(const waiter* w) const noexcept {
        const std::size_t slot = w->*Slot;
        return slot < items_.size() && items_[slot] == w;
    }

    void push(waiter* w) {
        items_.push_back(w);
        place(items_.size() - 1, w);
        sift_up(items_.size() - 1);
    }

    /// Removes and returns the least element. Precondition: !empty().
    waiter* pop() noexcept {
        waiter* least = items_.front();
        erase_at(0);
        return least;
    }

    /// Removes `w`. Precondition: contains(w).
    void erase(waiter* w) noexcept { erase_at(w->*Slot); }

    /// Removes every element (in no particular order) and returns them.
    std::vector<waiter*> take_all() noexcept {
        for (waiter* w : items_) w->*Slot = waiter::no_slot;
        return std::exchange(items_, {});
    }

    /// Moves every element to the end of `into`, least first, and leaves the heap empty (keeping
    /// its capacity). Sorting once is much cheaper than popping each element.
    void take_all_sorted(std::vector<waiter*>& into) {
        for (waiter* w : items_) w->*Slot = waiter::no_slot;
        std::sort(items_.begin(), items_.end(), less_);
        into.insert(into.end(), items_.begin(), items_.end());
        items_.clear();
    }

    /// Removes every element, keeping the heap's capacity.
    void clear() noexcept {
        for (waiter* w : items_) w->*Slot = waiter::no_slot;
        items_.clear();
    }

    /// Checks the heap property and every stored slot (for tests).
    bool valid() const noexcept {
        for (std::size_t i = 0; i < items_.size(); ++i) {
            if (items_[i]->*Slot != i) return false;
            if (i > 0 && less_(items_[i], items_[(i - 1) / 2])) return false;
        }
        return true;
    }

  private:
    void place(std::size_t i, waiter* w) noexcept {
        items_[i] = w;
        w->*Slot = i;
    }

    void erase_at(std::size_t i) noexcept {
        waiter* removed = items_[i];
        waiter* last = items_.back();
        items_.pop_back();
        removed->*Slot = waiter::no_slot;
        if (i == items_.size()) return;  // removed the last element
        place(i, last);
        // The element moved into the hole may belong above or below it.
        if (i > 0 && less_(last, items_[(i - 1) / 2])) {
            sift_up(i);
        } else {
            sift_down(i);
        }
    }

    void sift_up(std::size_t i) noexcept {
        waiter* moving = items_[i];
        while (i > 0) {
            const std::size_t parent = (i - 1) / 2;
            if (!less_(moving, items_[parent])) break;
            place(i, items_[parent]);
            i = parent;
        }
        place(i, moving);
    }

    void sift_down(std::size_t i) noexcept {
        waiter* moving = items_[i];
        const std::size_t n = items_.size();
        for (;;) {
            std::size_t child = 2 * i + 1;
            if (child >= n) break;
            if (child + 1 < n && less_(items_[child + 1], items_[child])) ++child;
            if (!less_(items_[child], moving)) break;
            place(i, items_[child]);
            i = child;
        }
        place(i, moving);
    }

    std::vector<waiter*> items_;
    [[no_unique_address]] Less less_;
};

using target_heap = waiter_heap<by_target, &waiter::lsn_slot>;
using deadline_heap = waiter_heap<by_deadline, &waiter::deadline_slot>;

}  // namespace flypg::replication::detail
