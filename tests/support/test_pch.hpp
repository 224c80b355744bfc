// Precompiled header shared by every test binary.
#pragma once

#include <gmock/gmock.h>
#include <gtest/gtest.h>

#include <asio.hpp>
#include <asio/experimental/awaitable_operators.hpp>

#include <chrono>
#include <string>
#include <vector>
