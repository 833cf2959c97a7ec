//! Custodian shares of a secret (a root token's PIN or SO PIN): m of n by Shamir secret sharing
//! over GF(256) (`vsss-rs`, byte-wise), for the key ceremony's quorum (issue 15; DESIGN.md
//! "Custody and roles"). Not yet called by a command: the ceremony (`ecert ceremony`) is built
//! on it.
//!
//! Two things the bare scheme does not give, and a ceremony needs:
//! - **A typo is named, per share.** Each share's text carries a checksum (the first 4 bytes of
//!   SHA-256 over the rest), so a custodian's mistyped share is refused by its number before
//!   anything is combined.
//! - **A wrong share never reaches the HSM.** Any m well-formed shares combine to *some*
//!   secret; a share from another set, or altered and given a fresh checksum, rebuilds a wrong
//!   PIN, and a real HSM locks its user after a few failed logins. So the sharing also returns a
//!   [`Check`] (a salted HMAC-SHA-256 of the secret, stored at creation), and [`combine`]
//!   refuses a rebuilt secret that does not match it — before any `C_Login`.
//!
//! A share's text: `ecert-share-v1.<set>.<m>of<n>.<index>.<payload>.<checksum>`: the set is 8
//! random bytes naming this sharing, the payload the index-tagged Shamir share, all base32
//! (RFC 4648, no padding, upper case: what a custodian reads aloud or types).

use data_encoding::BASE32_NOPAD;
use sha2::{Digest, Sha256};
use zeroize::Zeroizing;

use crate::error::{Error, Result};

const PREFIX: &str = "ecert-share-v1";
const CHECK_PREFIX: &str = "hmac-sha256";

/// What is stored at creation to check a rebuilt secret: `hmac-sha256.<salt>.<mac>` (hex).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Check(String);

impl Check {
    /// The stored form.
    pub fn as_str(&self) -> &str {
        &self.0
    }

    /// From the stored form.
    pub fn parse(s: &str) -> Result<Check> {
        let parts: Vec<&str> = s.split('.').collect();
        match parts.as_slice() {
            [CHECK_PREFIX, salt, mac]
                if hex::decode(salt).is_ok_and(|b| b.len() == 16)
                    && hex::decode(mac).is_ok_and(|b| b.len() == 32) =>
            {
                Ok(Check(s.to_string()))
            }
            _ => Err(invalid("not a share check (hmac-sha256.<salt>.<mac>)")),
        }
    }

    fn of(salt: &[u8], secret: &[u8]) -> Check {
        let key = ring::hmac::Key::new(ring::hmac::HMAC_SHA256, salt);
        let mac = ring::hmac::sign(&key, secret);
        Check(format!(
            "{CHECK_PREFIX}.{}.{}",
            hex::encode(salt),
            hex::encode(mac.as_ref())
        ))
    }

    fn matches(&self, secret: &[u8]) -> bool {
        let parts: Vec<&str> = self.0.split('.').collect();
        let (Some(salt), Some(mac)) = (
            parts.get(1).and_then(|s| hex::decode(s).ok()),
            parts.get(2).and_then(|s| hex::decode(s).ok()),
        ) else {
            return false;
        };
        let key = ring::hmac::Key::new(ring::hmac::HMAC_SHA256, &salt);
        ring::hmac::verify(&key, secret, &mac).is_ok()
    }
}

fn invalid(reason: impl Into<String>) -> Error {
    Error::Invalid {
        field: "share",
        reason: reason.into(),
    }
}

fn checksum(body: &str) -> String {
    BASE32_NOPAD.encode(&Sha256::digest(body.as_bytes())[..4])
}

/// Splits `secret` into `n` shares of which any `m` rebuild it (1 ≤ m ≤ n ≤ 16), and the
/// [`Check`] to store. With m = 1 every share is the secret itself (a 1-of-1 quorum: the
/// embedded default's built-in ceremony).
pub fn split(secret: &[u8], m: u8, n: u8) -> Result<(Vec<Zeroizing<String>>, Check)> {
    if secret.is_empty() || secret.len() > 255 {
        return Err(invalid("the secret has 1 to 255 bytes"));
    }
    if !(1..=16).contains(&n) || m == 0 || m > n {
        return Err(invalid(format!(
            "{m} of {n}: a quorum is 1 to n of at most 16 custodians"
        )));
    }
    let mut set = [0u8; 8];
    rand::Rng::fill(&mut rand::rngs::OsRng, &mut set);
    let mut salt = [0u8; 16];
    rand::Rng::fill(&mut rand::rngs::OsRng, &mut salt);
    let raw: Vec<Zeroizing<Vec<u8>>> = if m == 1 {
        (1..=n)
            .map(|i| {
                let mut v = Zeroizing::new(vec![i]);
                v.extend_from_slice(secret);
                v
            })
            .collect()
    } else {
        vsss_rs::Gf256::split_array(usize::from(m), usize::from(n), secret, rand::rngs::OsRng)
            .map_err(|e| invalid(format!("the sharing failed: {e:?}")))?
            .into_iter()
            .map(Zeroizing::new)
            .collect()
    };
    let set = BASE32_NOPAD.encode(&set);
    let shares = raw
        .iter()
        .map(|share| {
            let body = format!(
                "{PREFIX}.{set}.{m}of{n}.{}.{}",
                share[0],
                BASE32_NOPAD.encode(share)
            );
            Zeroizing::new(format!("{body}.{}", checksum(&body)))
        })
        .collect();
    Ok((shares, Check::of(&salt, secret)))
}

/// One share, read back.
struct Parsed {
    set: String,
    m: u8,
    n: u8,
    index: u8,
    payload: Zeroizing<Vec<u8>>,
}

fn parse(position: usize, text: &str) -> Result<Parsed> {
    let text = text.trim();
    let bad = |why: &str| invalid(format!("share {position}: {why}"));
    let (body, sum) = text
        .rsplit_once('.')
        .ok_or_else(|| bad("not an ecert share"))?;
    let parts: Vec<&str> = body.split('.').collect();
    let [PREFIX, set, quorum, index, payload] = parts.as_slice() else {
        return Err(bad("not an ecert share (ecert-share-v1.…)"));
    };
    if checksum(body) != *sum {
        return Err(bad("its checksum does not match: it was mistyped"));
    }
    let (m, n) = quorum
        .split_once("of")
        .and_then(|(m, n)| Some((m.parse::<u8>().ok()?, n.parse::<u8>().ok()?)))
        .ok_or_else(|| bad("no m-of-n"))?;
    let index: u8 = index.parse().map_err(|_| bad("no index"))?;
    if m == 0 || m > n || index == 0 || index > n {
        return Err(bad("its quorum or index is out of range"));
    }
    let payload = Zeroizing::new(
        BASE32_NOPAD
            .decode(payload.as_bytes())
            .map_err(|_| bad("its payload is not base32"))?,
    );
    if payload.first() != Some(&index) || payload.len() < 2 {
        return Err(bad("its payload does not match its index"));
    }
    Ok(Parsed {
        set: set.to_string(),
        m,
        n,
        index,
        payload,
    })
}

/// The index of a well-formed share (its custodian's number), without combining anything.
pub fn index_of(text: &str) -> Option<u8> {
    parse(1, text).ok().map(|p| p.index)
}

/// Rebuilds the secret from custodians' shares and checks it against `check`. Refused, with
/// the reason, before anything uses the secret: a mistyped share (named), shares of different
/// sets, the same share twice, fewer than the quorum, or shares that rebuild another secret.
pub fn combine(shares: &[&str], check: &Check) -> Result<Zeroizing<Vec<u8>>> {
    let parsed = shares
        .iter()
        .enumerate()
        .map(|(i, s)| parse(i + 1, s))
        .collect::<Result<Vec<_>>>()?;
    let Some(first) = parsed.first() else {
        return Err(invalid("no share given"));
    };
    if parsed
        .iter()
        .any(|p| p.set != first.set || p.m != first.m || p.n != first.n)
    {
        return Err(invalid("the shares are not all of one sharing"));
    }
    let mut indexes: Vec<u8> = parsed.iter().map(|p| p.index).collect();
    indexes.sort_unstable();
    indexes.dedup();
    if indexes.len() != parsed.len() {
        return Err(invalid("the same share was given twice"));
    }
    if parsed.len() < usize::from(first.m) {
        return Err(invalid(format!(
            "{} of {} custodians' shares are needed, {} given",
            first.m,
            first.n,
            parsed.len()
        )));
    }
    // Every share given must agree, not only the first m: a share beyond the quorum that was
    // forged (its checksum is not a MAC) must not be named in a record as present. The first m
    // rebuild the secret; each further share, with m - 1 of them, must rebuild the same.
    let m = usize::from(first.m);
    let secret = rebuild(&parsed[..m])?;
    if !check.matches(&secret) {
        return Err(invalid(
            "the shares do not rebuild the secret: one is from another sharing or was altered",
        ));
    }
    for extra in &parsed[m..] {
        let mut subset: Vec<&Parsed> = parsed[..m - 1].iter().collect();
        subset.push(extra);
        let again = rebuild_refs(&subset)?;
        if *again != *secret {
            return Err(invalid(format!(
                "share {} does not belong with the others: it is from another sharing or was altered",
                extra.index
            )));
        }
    }
    Ok(secret)
}

fn rebuild(parsed: &[Parsed]) -> Result<Zeroizing<Vec<u8>>> {
    rebuild_refs(&parsed.iter().collect::<Vec<_>>())
}

/// The secret m shares (m = their count) rebuild.
fn rebuild_refs(parsed: &[&Parsed]) -> Result<Zeroizing<Vec<u8>>> {
    if let [one] = parsed {
        return Ok(Zeroizing::new(one.payload[1..].to_vec()));
    }
    let raw: Vec<Vec<u8>> = parsed.iter().map(|p| p.payload.to_vec()).collect();
    let combined = vsss_rs::Gf256::combine_array(&raw);
    for mut r in raw {
        zeroize::Zeroize::zeroize(&mut r);
    }
    Ok(Zeroizing::new(combined.map_err(|e| {
        invalid(format!("the shares do not combine: {e:?}"))
    })?))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn refs(v: &[Zeroizing<String>]) -> Vec<&str> {
        v.iter().map(|s| s.as_str()).collect()
    }

    #[test]
    fn any_m_of_n_rebuild_the_secret_and_fewer_do_not() {
        let pin = b"a root token PIN 4711";
        let (shares, check) = split(pin, 2, 3).unwrap();
        let s = refs(&shares);
        for pair in [[0, 1], [0, 2], [1, 2], [2, 0]] {
            let got = combine(&[s[pair[0]], s[pair[1]]], &check).unwrap();
            assert_eq!(got.as_slice(), pin);
        }
        let e = combine(&[s[1]], &check).unwrap_err().to_string();
        assert!(e.contains("2 of 3"), "{e}");
        let e = combine(&[s[1], s[1]], &check).unwrap_err().to_string();
        assert!(e.contains("twice"), "{e}");
        // Every 3 of 5.
        let (shares, check) = split(pin, 3, 5).unwrap();
        let s = refs(&shares);
        for a in 0..5 {
            for b in a + 1..5 {
                for c in b + 1..5 {
                    assert_eq!(
                        combine(&[s[a], s[b], s[c]], &check).unwrap().as_slice(),
                        pin
                    );
                }
            }
        }
    }

    /// Review finding: only the first m shares were combined, so a forged share beyond the
    /// quorum (its checksum recomputed: it is no MAC) passed and was named in the record as a
    /// custodian present. Every share must agree now, and an index outside 1..=n is refused.
    #[test]
    fn a_forged_share_beyond_the_quorum_is_refused() {
        let pin = b"a root token PIN 4711";
        let (shares, check) = split(pin, 2, 3).unwrap();
        let s = refs(&shares);
        let (body, _) = s[2].rsplit_once('.').unwrap();
        let mut parts: Vec<String> = body.split('.').map(str::to_string).collect();
        let mut payload = BASE32_NOPAD.decode(parts[4].as_bytes()).unwrap();
        payload[3] ^= 0x55;
        parts[4] = BASE32_NOPAD.encode(&payload);
        let forged_body = parts.join(".");
        let forged = format!("{forged_body}.{}", checksum(&forged_body));
        let e = combine(&[s[0], s[1], &forged], &check)
            .unwrap_err()
            .to_string();
        assert!(e.contains("share 3 does not belong"), "{e}");
        // All three genuine: fine.
        assert_eq!(
            combine(&[s[0], s[1], s[2]], &check).unwrap().as_slice(),
            pin
        );
        // Index 0 (or above n) with a valid checksum: refused, not a panic.
        parts[3] = "0".into();
        payload[0] = 0;
        parts[4] = BASE32_NOPAD.encode(&payload);
        let zero_body = parts.join(".");
        let zero = format!("{zero_body}.{}", checksum(&zero_body));
        let e = combine(&[s[0], &zero], &check).unwrap_err().to_string();
        assert!(e.contains("out of range"), "{e}");
        assert_eq!(index_of(&zero), None);
    }

    #[test]
    fn a_mistyped_share_is_named_and_a_wrong_one_never_yields_a_secret() {
        let (shares, check) = split(b"0123456789", 2, 3).unwrap();
        let s = refs(&shares);
        // One character changed: the checksum names it.
        let mut typo = s[1].to_string();
        let i = typo.len() - 10;
        let c = if &typo[i..=i] == "A" { "B" } else { "A" };
        typo.replace_range(i..=i, c);
        let e = combine(&[s[0], &typo], &check).unwrap_err().to_string();
        assert!(e.contains("share 2") && e.contains("mistyped"), "{e}");
        // A share of another sharing of another secret (well formed): refused by set.
        let (other, other_check) = split(b"9876543210", 2, 3).unwrap();
        let e = combine(&[s[0], &other[1]], &check).unwrap_err().to_string();
        assert!(e.contains("not all of one sharing"), "{e}");
        // Altered and given a fresh checksum (a forged share of this set): the rebuilt secret
        // does not match the check, and nothing is returned.
        let p = parse(1, s[1]).unwrap();
        let mut payload = p.payload.to_vec();
        payload[3] ^= 0x5a;
        let body = format!(
            "{PREFIX}.{}.{}of{}.{}.{}",
            p.set,
            p.m,
            p.n,
            p.index,
            BASE32_NOPAD.encode(&payload)
        );
        let forged = format!("{body}.{}", checksum(&body));
        let e = combine(&[s[0], &forged], &check).unwrap_err().to_string();
        assert!(e.contains("do not rebuild"), "{e}");
        // And the right shares against another sharing's check.
        let e = combine(&[s[0], s[1]], &other_check)
            .unwrap_err()
            .to_string();
        assert!(e.contains("do not rebuild"), "{e}");
    }

    #[test]
    fn one_of_one_and_bad_parameters() {
        let (shares, check) = split(b"embedded", 1, 1).unwrap();
        assert_eq!(
            combine(&refs(&shares), &check).unwrap().as_slice(),
            b"embedded"
        );
        assert!(Check::parse(check.as_str()).is_ok());
        assert!(Check::parse("hmac-sha256.00.11").is_err());
        for (m, n) in [(0, 3), (4, 3), (2, 17)] {
            assert!(split(b"x", m, n).is_err(), "{m} of {n}");
        }
        assert!(split(b"", 2, 3).is_err());
        assert!(combine(&[], &check).is_err());
        assert!(combine(&["not a share"], &check).is_err());
    }
}
