// The protocol's value conversions, failures-as-values, and the handshake's HMAC. No sockets.
#include <capnp/message.h>

#include <gtest/gtest.h>

#include <string>
#include <vector>

#include "flypg/error.hpp"
#include "rpc/auth.hpp"
#include "rpc/codec.hpp"
#include "rpc/context.hpp"

namespace flypg::rpc::detail {
namespace {

TEST(Codec, ValuesKeepTheirTypes) {
    std::vector<value> values{value(null_value{}),
                              value(false),
                              value(std::int16_t{-32768}),
                              value(std::int32_t{-5}),
                              value(std::int64_t{9'000'000'000}),
                              value(-0.25),
                              value(std::string("h\xc3\xa9llo")),
                              value(bytes({0, 0, 7}))};
    capnp::MallocMessageBuilder message;
    auto list = message.initRoot<wire::Statement>().initParams(static_cast<unsigned>(values.size()));
    encode(values, list);
    auto decoded = decode(message.getRoot<wire::Statement>().asReader().getParams());
    EXPECT_EQ(decoded, values);
    for (std::size_t i = 0; i < values.size(); ++i) EXPECT_EQ(decoded[i].index(), values[i].index());
}

TEST(Codec, RowsKeepNullsApartFromEmptyText) {
    statement_result r;
    r.columns = {column{"a", 23}, column{"b", 25}};
    r.rows = {{std::string("1"), std::nullopt}, {std::string(""), std::string("x")}};
    r.affected_rows = 2;
    capnp::MallocMessageBuilder message;
    encode(r, message.initRoot<wire::StatementResult>());
    auto back = decode(message.getRoot<wire::StatementResult>().asReader());
    ASSERT_EQ(back.columns.size(), 2u);
    EXPECT_EQ(back.columns[1].name, "b");
    EXPECT_EQ(back.columns[0].type_oid, 23u);
    EXPECT_EQ(back.rows, r.rows);
    EXPECT_EQ(back.affected_rows, 2u);
}

TEST(Codec, AMalformedRowIsAnErrorNamingIt) {
    capnp::MallocMessageBuilder message;
    auto row = message.initRoot<wire::StatementResult>().initRows(1)[0];
    row.initCells(2);
    row.initNulls(1);
    try {
        (void)decode(message.getRoot<wire::StatementResult>().asReader());
        FAIL();
    } catch (const flypg::error& e) {
        EXPECT_EQ(e.code(), errc::invalid_argument);
        EXPECT_NE(std::string(e.what()).find("2 cells but 1 null flags"), std::string::npos);
    }
}

TEST(Codec, SqlErrorsBecomeSqlFailuresAndBackWithTheSameCode) {
    diagnostics diag;
    diag.server_message = "duplicate key";
    diag.detail = "Key (id)=(1) already exists.";
    diag.hint = "pick another id";
    auto f = failure_from_exception(std::make_exception_ptr(flypg::error(flypg::sqlstate("23505"), diag)),
                                    wire::Failure::Kind::PROCEDURE);
    EXPECT_EQ(f.kind, wire::Failure::Kind::SQL);
    EXPECT_EQ(f.sqlstate, "23505");
    capnp::MallocMessageBuilder message;
    encode(f, message.initRoot<wire::Failure>());
    auto e =
        error_from_failure(decode(message.getRoot<wire::Failure>().asReader()), "write", origin::primary);
    EXPECT_EQ(e.code(), flypg::sqlstate("23505"));
    EXPECT_EQ(e.diag().server_message, "duplicate key");
    EXPECT_EQ(e.diag().detail, "Key (id)=(1) already exists.");
    EXPECT_EQ(e.diag().hint, "pick another id");
    EXPECT_EQ(e.diag().origin, origin::primary);
}

TEST(Codec, OtherExceptionsKeepTheirKindAndText) {
    auto f = failure_from_exception(std::make_exception_ptr(std::runtime_error("boom")),
                                    wire::Failure::Kind::PROCEDURE);
    EXPECT_EQ(f.kind, wire::Failure::Kind::PROCEDURE);
    EXPECT_EQ(f.message, "boom");
    auto e = error_from_failure(f, "call of \"x\"", origin::rpc);
    EXPECT_EQ(e.code(), errc::procedure_error);
    EXPECT_EQ(e.diag().library_message, "call of \"x\": boom");
    f.kind = wire::Failure::Kind::OVERLOADED;
    EXPECT_EQ(error_from_failure(f, "x", origin::rpc).code(), errc::overloaded);
    f.kind = wire::Failure::Kind::VERSION_MISMATCH;
    EXPECT_EQ(error_from_failure(f, "x", origin::rpc).code(), errc::version_mismatch);
    f.kind = wire::Failure::Kind::SQL;
    f.sqlstate = "nope";
    EXPECT_EQ(error_from_failure(f, "x", origin::rpc).code(), errc::procedure_error);
}

TEST(Handshake, ProofIsHmacSha256OfTheLabelAndChallenges) {
    // RFC 4231, test case 2: key "Jefe", data "what do ya want for nothing?".
    const std::string data = "for nothing?";
    std::vector<std::uint8_t> first(data.begin(), data.end());
    auto p = make_proof("Jefe", "what do ya want ", first, {});
    static constexpr std::uint8_t expected[] = {
        0x5b, 0xdc, 0xc1, 0x46, 0xbf, 0x60, 0x75, 0x4e, 0x6a, 0x04, 0x24, 0x26, 0x08, 0x95, 0x75, 0xc7,
        0x5a, 0x00, 0x3f, 0x08, 0x9d, 0x27, 0x39, 0x83, 0x9d, 0xec, 0x58, 0xb9, 0x64, 0xec, 0x38, 0x43};
    EXPECT_TRUE(proofs_equal(p, expected));
}

TEST(Handshake, ProofsDependOnSecretDirectionAndChallenges) {
    auto a = random_challenge();
    auto b = random_challenge();
    EXPECT_NE(a, b);
    auto server = make_proof("secret-one-0123456789", server_proof_label, a, b);
    EXPECT_FALSE(proofs_equal(server, make_proof("secret-two-0123456789", server_proof_label, a, b)));
    EXPECT_FALSE(proofs_equal(server, make_proof("secret-one-0123456789", client_proof_label, a, b)));
    EXPECT_FALSE(proofs_equal(server, make_proof("secret-one-0123456789", server_proof_label, b, a)));
    EXPECT_TRUE(proofs_equal(server, make_proof("secret-one-0123456789", server_proof_label, a, b)));
    EXPECT_FALSE(proofs_equal(server, std::span<const std::uint8_t>(server.data(), 16)));
    // Without a secret (development) the proof is still well defined.
    EXPECT_TRUE(
        proofs_equal(make_proof("", server_proof_label, a, b), make_proof("", server_proof_label, a, b)));
}

TEST(Handshake, WhatAPeerSaysAboutItselfMustBeNamesOfBoundedLength) {
    EXPECT_EQ(identity_problem(identity{"0f3a9c21de", "syd", "1.4.2 (build 77)", 1}), "");
    EXPECT_EQ(identity_problem(identity{"host-a.internal:7878", "us-east_1", "", 1}), "");
    EXPECT_EQ(identity_problem(identity{"", "syd", "", 1}), "its node id is empty");
    EXPECT_EQ(identity_problem(identity{std::string(65, 'n'), "syd", "", 1}),
              "its node id is 65 bytes long (at most 64)");
    EXPECT_EQ(identity_problem(identity{"evil\nFAKE", "syd", "", 1}),
              "its node id holds a character that is not allowed (byte 10 at offset 4)");
    EXPECT_EQ(identity_problem(identity{"n", "s:d", "", 1}),
              "its region holds a character that is not allowed (byte 58 at offset 1)");
    EXPECT_EQ(identity_problem(identity{"n", "syd", "v1\x1b", 1}),
              "its app version holds a character that is not allowed (byte 27 at offset 2)");
    EXPECT_EQ(identity_problem(identity{"n", "syd", std::string(129, 'v'), 1}),
              "its app version is 129 bytes long (at most 128)");
}

}  // namespace
}  // namespace flypg::rpc::detail
