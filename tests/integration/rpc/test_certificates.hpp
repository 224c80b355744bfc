// Certificates for the TLS tests, made at run time with OpenSSL (no files in the tree to expire):
// a cluster CA, node certificates it signs, and a rogue CA with a node certificate of its own.
#pragma once

#include <openssl/evp.h>
#include <openssl/pem.h>
#include <openssl/x509.h>
#include <openssl/x509v3.h>

#include <cstdio>
#include <cstdlib>
#include <filesystem>
#include <memory>
#include <stdexcept>
#include <string>

namespace flypg::rpc::test {

struct pkey_free {
    void operator()(EVP_PKEY* k) const { EVP_PKEY_free(k); }
};
struct x509_free {
    void operator()(X509* c) const { X509_free(c); }
};
using owned_key = std::unique_ptr<EVP_PKEY, pkey_free>;
using owned_cert = std::unique_ptr<X509, x509_free>;

/// A key pair and its certificate, signed by `issuer` (self-signed when null) with `issuer_key`.
struct credential {
    owned_key key;
    owned_cert cert;
};

inline void check(bool ok, const char* what) {
    if (!ok) throw std::runtime_error(std::string("making test certificates: ") + what);
}

inline credential make_credential(const std::string& common_name, const credential* issuer, bool is_ca) {
    static long serial = 1;
    credential out{owned_key(EVP_EC_gen("P-256")), owned_cert(X509_new())};
    check(out.key && out.cert, "EVP_EC_gen / X509_new");
    X509* c = out.cert.get();
    X509_set_version(c, 2);
    ASN1_INTEGER_set(X509_get_serialNumber(c), serial++);
    X509_gmtime_adj(X509_getm_notBefore(c), -3600);
    X509_gmtime_adj(X509_getm_notAfter(c), 24 * 3600);
    X509_set_pubkey(c, out.key.get());
    X509_NAME* name = X509_get_subject_name(c);
    X509_NAME_add_entry_by_txt(
        name, "CN", MBSTRING_ASC, reinterpret_cast<const unsigned char*>(common_name.c_str()), -1, -1, 0);
    X509* issuer_cert = issuer != nullptr ? issuer->cert.get() : c;
    X509_set_issuer_name(c, X509_get_subject_name(issuer_cert));
    X509V3_CTX ctx;
    X509V3_set_ctx_nodb(&ctx);
    X509V3_set_ctx(&ctx, issuer_cert, c, nullptr, nullptr, 0);
    X509_EXTENSION* ext =
        X509V3_EXT_conf_nid(nullptr, &ctx, NID_basic_constraints, is_ca ? "critical,CA:TRUE" : "CA:FALSE");
    check(ext != nullptr, "basicConstraints");
    X509_add_ext(c, ext, -1);
    X509_EXTENSION_free(ext);
    EVP_PKEY* signer = issuer != nullptr ? issuer->key.get() : out.key.get();
    check(X509_sign(c, signer, EVP_sha256()) > 0, "X509_sign");
    return out;
}

/// PEM files in a temporary directory, removed with the object.
class certificate_files {
  public:
    certificate_files() {
        char pattern[] = "/tmp/flypg-tls-test-XXXXXX";
        check(::mkdtemp(pattern) != nullptr, "mkdtemp");
        dir_ = pattern;
        auto ca = make_credential("flypg test cluster CA", nullptr, true);
        auto rogue_ca = make_credential("someone else's CA", nullptr, true);
        write_cert("ca.pem", ca);
        write_cert("rogue-ca.pem", rogue_ca);
        for (const char* node : {"node-a", "node-b"}) {
            auto c = make_credential(node, &ca, false);
            write_cert(std::string(node) + ".pem", c);
            write_key(std::string(node) + ".key", c);
        }
        auto rogue = make_credential("rogue node", &rogue_ca, false);
        write_cert("rogue.pem", rogue);
        write_key("rogue.key", rogue);
    }
    ~certificate_files() {
        std::error_code ignored;
        std::filesystem::remove_all(dir_, ignored);
    }
    certificate_files(const certificate_files&) = delete;
    certificate_files& operator=(const certificate_files&) = delete;

    /// Full path of one of: ca.pem, rogue-ca.pem, node-a.pem/.key, node-b.pem/.key, rogue.pem/.key.
    std::string path(const std::string& name) const { return (dir_ / name).string(); }

  private:
    void write_cert(const std::string& name, const credential& c) {
        std::FILE* f = std::fopen(path(name).c_str(), "w");
        check(f != nullptr, "fopen");
        const bool ok = PEM_write_X509(f, c.cert.get()) == 1;
        std::fclose(f);
        check(ok, "PEM_write_X509");
    }
    void write_key(const std::string& name, const credential& c) {
        std::FILE* f = std::fopen(path(name).c_str(), "w");
        check(f != nullptr, "fopen");
        const bool ok = PEM_write_PrivateKey(f, c.key.get(), nullptr, nullptr, 0, nullptr, nullptr) == 1;
        std::fclose(f);
        check(ok, "PEM_write_PrivateKey");
    }

    std::filesystem::path dir_;
};

}  // namespace flypg::rpc::test
