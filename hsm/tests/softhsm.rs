//! Integration tests against a real SoftHSM2 (no mocks).
//!
//! nextest runs each test in its own process, so each gets its own SoftHSM2 token directory.
//! Under plain `cargo test` (one process, many threads) the tests share one directory, set up
//! once, and stay apart by using distinct token labels.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::{Mutex, OnceLock};

use hsm::pkcs11::{self, Pkcs11Config, Token};
use hsm::{Error, Signer};

const USER_PIN: &str = "user-pin-1234";
const SO_PIN: &str = "so-pin-5678";

struct Env {
    tokens: PathBuf,
}

fn env() -> &'static Env {
    static ENV: OnceLock<(tempfile::TempDir, Env)> = OnceLock::new();
    &ENV.get_or_init(|| {
        let dir = tempfile::tempdir().unwrap();
        let conf = pkcs11::softhsm_conf(dir.path()).unwrap();
        // Before any PKCS#11 call in this process: SoftHSM2 reads it in C_Initialize.
        std::env::set_var("SOFTHSM2_CONF", &conf);
        let env = Env {
            tokens: dir.path().join("tokens"),
        };
        (dir, env)
    })
    .1
}

fn config(label: &str) -> Pkcs11Config {
    Pkcs11Config {
        module: pkcs11::default_module(),
        token_label: label.to_string(),
        user_pin: USER_PIN.to_string(),
        so_pin: Some(SO_PIN.to_string()),
        pool_size: 4,
    }
}

/// Creates the token and returns its config and the directory SoftHSM2 keeps it in.
fn setup(label: &str) -> (Pkcs11Config, PathBuf) {
    let cfg = config(label);
    let dir = create_token(&cfg);
    (cfg, dir)
}

/// Runs `init_token` for a token that does not exist yet; returns its new directory.
fn create_token(cfg: &Pkcs11Config) -> PathBuf {
    static INIT: Mutex<()> = Mutex::new(());
    let env = env();
    let _one_at_a_time = INIT.lock().unwrap_or_else(|e| e.into_inner());
    let before = token_dirs(&env.tokens);
    pkcs11::init_token(cfg).unwrap();
    let after = token_dirs(&env.tokens);
    let new: Vec<_> = after.into_iter().filter(|d| !before.contains(d)).collect();
    assert_eq!(new.len(), 1, "one new token directory");
    new[0].clone()
}

fn token_dirs(tokens: &Path) -> Vec<PathBuf> {
    std::fs::read_dir(tokens)
        .unwrap()
        .map(|e| e.unwrap().path())
        .filter(|p| p.is_dir())
        .collect()
}

#[test]
fn init_token_is_idempotent_and_wrong_pin_is_refused() {
    let (cfg, dir) = setup("t-init");
    // Again: nothing happens, no second token appears.
    pkcs11::init_token(&cfg).unwrap();
    pkcs11::init_token(&Pkcs11Config {
        so_pin: None,
        ..cfg.clone()
    })
    .unwrap();
    assert!(dir.is_dir());
    assert_eq!(
        token_dirs(&env().tokens)
            .iter()
            .filter(|d| **d == dir)
            .count(),
        1
    );

    let wrong = Pkcs11Config {
        user_pin: "not-the-pin".into(),
        ..cfg.clone()
    };
    // The token itself refuses the PIN.
    assert!(matches!(Token::open(&wrong), Err(Error::PinIncorrect)));

    let token = Token::open(&cfg).unwrap();
    assert_eq!(token.label(), "t-init");
    // While this process is logged in, C_Login does not check PINs: refused all the same.
    assert!(matches!(Token::open(&wrong), Err(Error::PinIncorrect)));
    let again = Token::open(&cfg).unwrap();
    drop(again);

    assert!(matches!(
        Token::open(&config("t-no-such-token")),
        Err(Error::TokenNotFound { .. })
    ));
    // No SO PIN, no token.
    assert!(matches!(
        pkcs11::init_token(&Pkcs11Config {
            so_pin: None,
            ..config("t-no-so-pin")
        }),
        Err(Error::Config(_))
    ));
    // Debug never shows PINs.
    let shown = format!("{cfg:?} {token:?}");
    assert!(
        !shown.contains(USER_PIN) && !shown.contains(SO_PIN),
        "{shown}"
    );
}

#[test]
fn signature_verifies_here_and_with_openssl() {
    let (cfg, _) = setup("t-sign");
    let token = Token::open(&cfg).unwrap();
    let key = token.generate_ec_key("ca-key").unwrap();
    assert_eq!(key.algorithm(), hsm::Algorithm::EcdsaP256Sha256);
    assert_eq!(key.label(), "ca-key");
    assert_eq!(key.id().len(), 20);

    let msg = b"tbsCertificate bytes, more or less".to_vec();
    let sig = key.sign(&msg).unwrap();
    hsm::verify(key.algorithm(), key.public_key_spki(), &msg, &sig).unwrap();
    let mut flipped = msg.clone();
    flipped[3] ^= 0x10;
    assert!(matches!(
        hsm::verify(key.algorithm(), key.public_key_spki(), &flipped, &sig),
        Err(Error::BadSignature)
    ));

    // An outside judge: OpenSSL.
    let work = tempfile::tempdir().unwrap();
    let p = |n: &str| work.path().join(n);
    std::fs::write(p("pub.der"), key.public_key_spki()).unwrap();
    std::fs::write(p("sig.der"), &sig).unwrap();
    std::fs::write(p("msg"), &msg).unwrap();
    std::fs::write(p("other"), &flipped).unwrap();
    let out = Command::new("openssl")
        .args(["pkey", "-pubin", "-inform", "DER", "-in"])
        .arg(p("pub.der"))
        .arg("-out")
        .arg(p("pub.pem"))
        .output()
        .unwrap();
    assert!(out.status.success(), "{out:?}");
    let out = Command::new("openssl")
        .args(["pkey", "-pubin", "-in"])
        .arg(p("pub.pem"))
        .arg("-text")
        .arg("-noout")
        .output()
        .unwrap();
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(text.contains("prime256v1"), "{text}");
    let verify = |m: &str| {
        Command::new("openssl")
            .args(["dgst", "-sha256", "-verify"])
            .arg(p("pub.pem"))
            .arg("-signature")
            .arg(p("sig.der"))
            .arg(p(m))
            .output()
            .unwrap()
    };
    let out = verify("msg");
    assert!(out.status.success(), "{out:?}");
    assert!(String::from_utf8_lossy(&out.stdout).contains("Verified OK"));
    assert!(!verify("other").status.success());
}

/// Every CA key type: generated in the token, found again by label with the same public key,
/// its signatures verify here and with OpenSSL (`dgst -sha256`/`-sha384`; RSA PKCS#1 v1.5), and
/// the private key is as locked down as the P-256 one.
#[test]
fn every_key_type_signs_and_openssl_verifies() {
    let (cfg, _) = setup("t-keyspecs");
    let token = Token::open(&cfg).unwrap();
    let work = tempfile::tempdir().unwrap();
    let p = |n: &str| work.path().join(n);
    let msg = b"tbsCertList bytes, more or less".to_vec();
    std::fs::write(p("msg"), &msg).unwrap();
    for spec in hsm::KeySpec::ALL {
        let label = format!("ca-{spec}");
        let key = token.generate_key(&label, spec).unwrap();
        assert_eq!(key.spec(), spec);
        assert_eq!(key.algorithm(), spec.algorithm());
        assert_eq!(hsm::KeySpec::of_spki(key.public_key_spki()).unwrap(), spec);
        let again = token.key(&label).unwrap();
        assert_eq!(again.public_key_spki(), key.public_key_spki(), "{spec}");
        assert_eq!(again.id(), key.id(), "{spec}");
        let attrs = token.private_key_attributes(&label).unwrap();
        assert!(
            attrs.sensitive && !attrs.extractable && attrs.sign,
            "{spec}: {attrs:?}"
        );

        let sig = again.sign(&msg).unwrap();
        hsm::verify(spec.algorithm(), key.public_key_spki(), &msg, &sig).unwrap();
        if let Some(bits) = spec.rsa_bits() {
            assert_eq!(sig.len(), bits as usize / 8, "{spec}");
        }
        let mut flipped = msg.clone();
        flipped[0] ^= 1;
        assert!(hsm::verify(spec.algorithm(), key.public_key_spki(), &flipped, &sig).is_err());

        std::fs::write(p("pub.der"), key.public_key_spki()).unwrap();
        std::fs::write(p("sig"), &sig).unwrap();
        let out = Command::new("openssl")
            .args(["pkey", "-pubin", "-inform", "DER", "-text", "-noout", "-in"])
            .arg(p("pub.der"))
            .output()
            .unwrap();
        assert!(out.status.success(), "{spec}: {out:?}");
        let text = String::from_utf8_lossy(&out.stdout);
        let expect = match spec.rsa_bits() {
            Some(bits) => format!("Public-Key: ({bits} bit)"),
            None if spec == hsm::KeySpec::P384 => "secp384r1".into(),
            None => "prime256v1".into(),
        };
        assert!(text.contains(&expect), "{spec}: {text}");
        let digest = if spec == hsm::KeySpec::P384 {
            "-sha384"
        } else {
            "-sha256"
        };
        let out = Command::new("openssl")
            .args(["dgst", digest, "-keyform", "DER", "-verify"])
            .arg(p("pub.der"))
            .arg("-signature")
            .arg(p("sig"))
            .arg(p("msg"))
            .output()
            .unwrap();
        assert!(
            String::from_utf8_lossy(&out.stdout).contains("Verified OK"),
            "{spec}: {out:?}"
        );
    }
}

#[test]
fn private_key_is_not_extractable() {
    let (cfg, _) = setup("t-sensitive");
    let token = Token::open(&cfg).unwrap();
    token.generate_ec_key("ca-key").unwrap();
    match token.read_private_value("ca-key") {
        Err(Error::Pkcs11 { function, detail }) => {
            assert_eq!(function, "C_GetAttributeValue");
            assert!(detail.contains("AttributeSensitive"), "{detail}");
        }
        other => panic!("the token gave out the private key or failed oddly: {other:?}"),
    }
    let attrs = token.private_key_attributes("ca-key").unwrap();
    assert!(attrs.sensitive, "{attrs:?}");
    assert!(!attrs.extractable, "{attrs:?}");
    assert!(attrs.always_sensitive, "{attrs:?}");
    assert!(attrs.never_extractable, "{attrs:?}");
    assert!(attrs.token && attrs.private && attrs.sign, "{attrs:?}");
    assert!(matches!(
        token.read_private_value("no-such-key"),
        Err(Error::KeyNotFound { .. })
    ));
}

#[test]
fn keys_are_found_by_label_after_reopening() {
    let (cfg, _) = setup("t-find");
    let spki = {
        let token = Token::open(&cfg).unwrap();
        let key = token.generate_ec_key("ca-key").unwrap();
        assert!(matches!(
            token.generate_ec_key("ca-key"),
            Err(Error::KeyExists { .. })
        ));
        let other = token.generate_ec_key("ocsp-key").unwrap();
        assert_ne!(other.public_key_spki(), key.public_key_spki());
        key.public_key_spki().to_vec()
    };
    let token = Token::open(&cfg).unwrap();
    let key = token.find_key("ca-key").unwrap().expect("the key is found");
    assert_eq!(key.public_key_spki(), spki.as_slice());
    assert_eq!(
        token.key("ca-key").unwrap().public_key_spki(),
        spki.as_slice()
    );
    let sig = key.sign(b"after reopening").unwrap();
    hsm::verify(key.algorithm(), &spki, b"after reopening", &sig).unwrap();

    assert!(token.find_key("unknown").unwrap().is_none());
    assert!(matches!(
        token.key("unknown"),
        Err(Error::KeyNotFound { .. })
    ));
    assert!(matches!(
        token.generate_ec_key("ca-key"),
        Err(Error::KeyExists { .. })
    ));
    // Two tokens open on the same token at once work side by side.
    let second = Token::open(&cfg).unwrap();
    let k2 = second.key("ca-key").unwrap();
    let sig = k2.sign(b"second").unwrap();
    hsm::verify(k2.algorithm(), &spki, b"second", &sig).unwrap();
    drop(second);
    let sig = key.sign(b"first again").unwrap();
    hsm::verify(key.algorithm(), &spki, b"first again", &sig).unwrap();
}

#[test]
fn many_threads_sign_at_once() {
    let (cfg, _) = setup("t-threads");
    let token = Token::open(&cfg).unwrap();
    let key = token.generate_ec_key("ca-key").unwrap();
    let handles: Vec<_> = (0..4)
        .map(|t| {
            let key = key.clone();
            std::thread::spawn(move || {
                for i in 0..200 {
                    let msg = format!("thread {t} message {i}");
                    let sig = key.sign(msg.as_bytes()).unwrap();
                    hsm::verify(key.algorithm(), key.public_key_spki(), msg.as_bytes(), &sig)
                        .unwrap();
                }
            })
        })
        .collect();
    for h in handles {
        h.join().unwrap();
    }
    // As a trait object, as the CA holds it.
    let signer: std::sync::Arc<dyn Signer> = std::sync::Arc::new(key);
    let sig = signer.sign(b"dyn").unwrap();
    hsm::verify(signer.algorithm(), signer.public_key_spki(), b"dyn", &sig).unwrap();
}

#[test]
fn signing_recovers_after_all_sessions_are_closed() {
    let (cfg, _) = setup("t-recover");
    let token = Token::open(&cfg).unwrap();
    let key = token.generate_ec_key("ca-key").unwrap();
    let sig = key.sign(b"before").unwrap();
    hsm::verify(key.algorithm(), key.public_key_spki(), b"before", &sig).unwrap();

    token.close_all_sessions();
    let sig = key.sign(b"after").unwrap();
    hsm::verify(key.algorithm(), key.public_key_spki(), b"after", &sig).unwrap();

    // Another Token on the same token, with a pooled session and a cached key handle: the
    // logout invalidates that handle under it (a real CKR_*_HANDLE_INVALID / not-logged-in
    // answer from SoftHSM2), and its next signature goes through the reconnect-and-retry path.
    let other = Token::open(&cfg).unwrap();
    let other_key = other.key("ca-key").unwrap();
    other_key.sign(b"warm the pool").unwrap();
    token.close_all_sessions();
    let sig = other_key.sign(b"after the other token closed").unwrap();
    hsm::verify(
        key.algorithm(),
        key.public_key_spki(),
        b"after the other token closed",
        &sig,
    )
    .unwrap();
    let sig = key.sign(b"and this one").unwrap();
    hsm::verify(
        key.algorithm(),
        key.public_key_spki(),
        b"and this one",
        &sig,
    )
    .unwrap();

    // While other threads sign.
    let workers: Vec<_> = (0..3)
        .map(|t| {
            let key = key.clone();
            std::thread::spawn(move || {
                for i in 0..50 {
                    let msg = format!("{t}/{i}");
                    let sig = key.sign(msg.as_bytes()).unwrap();
                    hsm::verify(key.algorithm(), key.public_key_spki(), msg.as_bytes(), &sig)
                        .unwrap();
                }
            })
        })
        .collect();
    for _ in 0..5 {
        std::thread::sleep(std::time::Duration::from_millis(5));
        token.close_all_sessions();
    }
    for w in workers {
        w.join().unwrap();
    }
}

#[test]
fn signing_fails_when_the_token_is_gone_or_replaced() {
    let (cfg, dir) = setup("t-gone");
    let token = Token::open(&cfg).unwrap();
    let key = token.generate_ec_key("ca-key").unwrap();
    key.sign(b"before").unwrap();

    // The token directory vanishes under the running process (SoftHSM2 then answers
    // CKR_OBJECT_HANDLE_INVALID and the token leaves the slot list).
    std::fs::remove_dir_all(&dir).unwrap();
    let res = key.sign(b"after removal");
    assert!(
        matches!(res, Err(Error::TokenUnavailable { .. })),
        "{res:?}"
    );
    assert!(matches!(
        Token::open(&cfg),
        Err(Error::TokenNotFound { .. })
    ));

    // A new token with the same label, holding a new key with the same label.
    let new_dir = create_token(&cfg);
    assert_ne!(new_dir, dir);
    let replacement = Token::open(&cfg).unwrap();
    let impostor = replacement.generate_ec_key("ca-key").unwrap();
    assert_ne!(impostor.public_key_spki(), key.public_key_spki());

    // The old key never signs with the new one: it is simply not found.
    for _ in 0..3 {
        let res = key.sign(b"after replacement");
        assert!(
            matches!(
                res,
                Err(Error::KeyNotFound { .. } | Error::TokenUnavailable { .. })
            ),
            "{res:?}"
        );
    }
    // Looking the label up again finds the new key, with its own public key.
    let found = token.key("ca-key").unwrap();
    assert_eq!(found.public_key_spki(), impostor.public_key_spki());
    let sig = found.sign(b"new key").unwrap();
    hsm::verify(
        found.algorithm(),
        impostor.public_key_spki(),
        b"new key",
        &sig,
    )
    .unwrap();
    assert!(hsm::verify(key.algorithm(), key.public_key_spki(), b"new key", &sig).is_err());
}

/// Personal-data keys: AES-256-GCM sealing and HMAC-SHA-256 inside SoftHSM2, cross-checked
/// against ring (an independent implementation), values never readable, purposes bound.
#[test]
fn secret_keys_seal_and_mac_inside_the_token() {
    use hsm::pkcs11::SecretKind;
    use hsm::{Mac, Sealer};
    let (cfg, _) = setup("t-secret");
    let token = Token::open(&cfg).unwrap();
    let sealer = token
        .generate_secret("pii-wrap", SecretKind::Aes256Gcm)
        .unwrap();
    let mac = token
        .generate_secret("pii-index", SecretKind::HmacSha256)
        .unwrap();
    assert!(matches!(
        token.generate_secret("pii-wrap", SecretKind::Aes256Gcm),
        Err(Error::KeyExists { .. })
    ));

    let sealed = sealer
        .seal(b"purpose-a", b"a data key of 32 bytes, random..")
        .unwrap();
    assert_eq!(sealed.len(), hsm::GCM_NONCE_LEN + 32 + hsm::GCM_TAG_LEN);
    assert_eq!(
        sealer.open(b"purpose-a", &sealed).unwrap(),
        b"a data key of 32 bytes, random.."
    );
    // Another purpose, a flipped bit, a truncation: refused, never garbage.
    let r = sealer.open(b"purpose-b", &sealed);
    assert!(matches!(r, Err(Error::Unseal)), "{r:?}");
    let mut flipped = sealed.clone();
    flipped[20] ^= 1;
    assert!(matches!(
        sealer.open(b"purpose-a", &flipped),
        Err(Error::Unseal)
    ));
    assert!(matches!(
        sealer.open(b"purpose-a", &sealed[..20]),
        Err(Error::Unseal)
    ));
    // Fresh nonce each time.
    assert_ne!(
        sealer.seal(b"p", b"x").unwrap(),
        sealer.seal(b"p", b"x").unwrap()
    );

    let a = mac.mac(b"hkid:A1234563").unwrap();
    assert_eq!(a, mac.mac(b"hkid:A1234563").unwrap(), "deterministic");
    assert_ne!(a, mac.mac(b"hkid:A1234564").unwrap());
    // Kinds are not interchangeable.
    assert!(sealer.mac(b"x").is_err());
    assert!(mac.seal(b"x", b"y").is_err());

    // Both survive reopening, found by label; neither value can be read out.
    drop(token);
    let token = Token::open(&cfg).unwrap();
    let sealer = token
        .find_secret("pii-wrap", SecretKind::Aes256Gcm)
        .unwrap()
        .unwrap();
    assert_eq!(
        sealer.open(b"purpose-a", &sealed).unwrap(),
        b"a data key of 32 bytes, random.."
    );
    let mac = token
        .find_secret("pii-index", SecretKind::HmacSha256)
        .unwrap()
        .unwrap();
    assert_eq!(mac.mac(b"hkid:A1234563").unwrap(), a);
    for label in ["pii-wrap", "pii-index"] {
        match token.read_secret_value(label) {
            Err(Error::Pkcs11 { detail, .. }) if detail.contains("AttributeSensitive") => {}
            other => panic!("{label}: the token gave out a secret key or failed oddly: {other:?}"),
        }
    }
    assert!(token
        .find_secret("nope", SecretKind::HmacSha256)
        .unwrap()
        .is_none());

    // The AES-GCM output is standard: ring opens nothing without the key, but the layout is
    // the software sealer's too, so a software-sealed value has the same shape.
    let soft = hsm::software::SoftwareSealer::generate();
    let s = soft.seal(b"purpose-a", b"x").unwrap();
    assert_eq!(s.len(), hsm::GCM_NONCE_LEN + 1 + hsm::GCM_TAG_LEN);
    assert_eq!(soft.open(b"purpose-a", &s).unwrap(), b"x");
}

/// Issue 13, defect 1: SoftHSM2 sees tokens only at `C_Initialize`, so a token directory moved
/// away and back used to stay invisible to the process for good. Now the module is finalised
/// and initialised again (with backoff) and the same key signs again, found by label and
/// checked against its public key; while the token is away nothing signs and no attempt
/// blocks for long.
#[test]
fn signing_resumes_when_a_lost_token_comes_back() {
    let (cfg, dir) = setup("t-moved");
    let token = Token::open(&cfg).unwrap();
    let key = token.generate_ec_key("ca-key").unwrap();
    // A second token on the same module, which the re-initialisation also resets.
    let (other_cfg, _) = setup("t-bystander");
    let other = Token::open(&other_cfg).unwrap();
    let other_key = other.generate_ec_key("other-key").unwrap();
    key.sign(b"before").unwrap();
    other_key.sign(b"before").unwrap();

    // Out of SoftHSM2's token directory (a moved copy inside it would be found as a token).
    let away = dir.parent().unwrap().with_extension(format!(
        "away-{}",
        dir.file_name().unwrap().to_string_lossy()
    ));
    std::fs::rename(&dir, &away).unwrap();
    for _ in 0..20 {
        let started = std::time::Instant::now();
        let res = key.sign(b"while away");
        assert!(
            matches!(res, Err(Error::TokenUnavailable { .. })),
            "{res:?}"
        );
        assert!(started.elapsed() < std::time::Duration::from_secs(2));
        std::thread::sleep(std::time::Duration::from_millis(100));
    }
    // The bystander is unaffected but for one reconnect.
    let sig = other_key.sign(b"bystander").unwrap();
    hsm::verify(
        other_key.algorithm(),
        other_key.public_key_spki(),
        b"bystander",
        &sig,
    )
    .unwrap();

    std::fs::rename(&away, &dir).unwrap();
    let back = std::time::Instant::now();
    let sig = loop {
        match key.sign(b"after") {
            Ok(sig) => break sig,
            Err(Error::TokenUnavailable { .. }) => {
                assert!(
                    back.elapsed() < std::time::Duration::from_secs(10),
                    "the token is back but nothing signs"
                );
                std::thread::sleep(std::time::Duration::from_millis(100));
            }
            Err(e) => panic!("{e:?}"),
        }
    };
    hsm::verify(key.algorithm(), key.public_key_spki(), b"after", &sig).unwrap();
    // Many threads at once after the return: all sign.
    let workers: Vec<_> = (0..4)
        .map(|t| {
            let key = key.clone();
            std::thread::spawn(move || {
                for i in 0..25 {
                    let msg = format!("{t}/{i}");
                    let sig = key.sign(msg.as_bytes()).unwrap();
                    hsm::verify(key.algorithm(), key.public_key_spki(), msg.as_bytes(), &sig)
                        .unwrap();
                }
            })
        })
        .collect();
    for w in workers {
        w.join().unwrap();
    }
}

/// Review of issue 13's fix: while one token of a module is lost, a second, healthy token on
/// the same module signing all the time must not end the first one's outage (which reset the
/// backoff and re-initialised the module on every call), and the lost token's keys are
/// "unavailable", never "not found".
#[test]
fn a_healthy_token_does_not_end_another_tokens_outage() {
    let (cfg, dir) = setup("t-lost-a");
    let token = Token::open(&cfg).unwrap();
    let key = token.generate_ec_key("ca-key").unwrap();
    let (other_cfg, _) = setup("t-healthy-b");
    let other = Token::open(&other_cfg).unwrap();
    let other_key = other.generate_ec_key("other-key").unwrap();
    key.sign(b"before").unwrap();

    let away = dir.parent().unwrap().with_extension(format!(
        "away-{}",
        dir.file_name().unwrap().to_string_lossy()
    ));
    std::fs::rename(&dir, &away).unwrap();
    let stop = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(false));
    let busy = {
        let (stop, other_key) = (stop.clone(), other_key.clone());
        std::thread::spawn(move || {
            let mut n = 0;
            while !stop.load(std::sync::atomic::Ordering::Relaxed) {
                if other_key.sign(b"healthy").is_ok() {
                    n += 1;
                }
                std::thread::sleep(std::time::Duration::from_millis(10));
            }
            n
        })
    };
    let started = std::time::Instant::now();
    let before = pkcs11::reinitialisations();
    while started.elapsed() < std::time::Duration::from_secs(3) {
        match key.sign(b"while away") {
            Err(Error::TokenUnavailable { .. }) => {}
            other => panic!("a lost token's key must be unavailable: {other:?}"),
        }
        std::thread::sleep(std::time::Duration::from_millis(20));
    }
    let reinits = pkcs11::reinitialisations() - before;
    stop.store(true, std::sync::atomic::Ordering::Relaxed);
    let healthy = busy.join().unwrap();
    // Backoff 0.5, 1, 2 s: a handful in 3 s, not one per call (~150).
    assert!(reinits <= 6, "{reinits} re-initialisations in 3 s");
    assert!(
        healthy > 50,
        "the healthy token signed only {healthy} times"
    );

    std::fs::rename(&away, &dir).unwrap();
    let back = std::time::Instant::now();
    while key.sign(b"after").is_err() {
        assert!(back.elapsed() < std::time::Duration::from_secs(10));
        std::thread::sleep(std::time::Duration::from_millis(100));
    }
    // A key that really is not there is still "not found" (after one reconnect).
    assert!(matches!(
        token.key("no-such-key"),
        Err(Error::KeyNotFound { .. })
    ));
    assert!(token.find_key("no-such-key").unwrap().is_none());
}
