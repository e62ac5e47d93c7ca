//! Lower-case hex, and the SHA-256 digests the services name things by.

use sha2::{Digest, Sha256};

pub fn hex(bytes: &[u8]) -> String {
    use std::fmt::Write;
    bytes
        .iter()
        .fold(String::with_capacity(bytes.len() * 2), |mut s, b| {
            let _ = write!(s, "{b:02x}");
            s
        })
}

pub fn sha256_hex(data: impl AsRef<[u8]>) -> String {
    hex(&Sha256::digest(data.as_ref()))
}

/// The `N` bytes that `2 * N` hex digits spell, of either case.
pub fn from_hex<const N: usize>(text: &str) -> Option<[u8; N]> {
    if text.len() != 2 * N || !text.bytes().all(|b| b.is_ascii_hexdigit()) {
        return None;
    }
    let mut out = [0u8; N];
    for (byte, pair) in out.iter_mut().zip(text.as_bytes().chunks_exact(2)) {
        let pair = std::str::from_utf8(pair).ok()?;
        *byte = u8::from_str_radix(pair, 16).ok()?;
    }
    Some(out)
}

#[cfg(test)]
mod tests {
    #[test]
    fn hex_goes_both_ways_and_refuses_what_is_not_hex() {
        let digest = super::sha256_hex("x");
        let bytes = super::from_hex::<32>(&digest).expect("64 digits");
        assert_eq!(super::hex(&bytes), digest);
        assert!(super::from_hex::<32>(&digest.to_uppercase()).is_some());
        assert!(super::from_hex::<32>(&digest[1..]).is_none());
        assert!(super::from_hex::<2>("+1ff").is_none());
        assert!(super::from_hex::<2>("zzzz").is_none());
    }
}
