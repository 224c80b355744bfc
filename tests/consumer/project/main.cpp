// Links against the installed flypg and calls into it without a database.
#include <flypg/error.hpp>
#include <flypg/pg/param.hpp>

#include <cstdio>

int main() {
    const std::error_code ec = flypg::sqlstate("23505");
    const flypg::pg::param p(std::int64_t{1});
    if (p.is_null()) return 1;
    std::printf(
        "%s %s\n", flypg::sqlstate_text(ec).c_str(), std::string(flypg::sqlstate_name("23505")).c_str());
    return 0;
}
