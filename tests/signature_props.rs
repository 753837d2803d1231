//! Properties of signing and verifying, over arbitrary inputs.

use ltvboost_webhooks::signature::{Secret, Signature, SignatureError, Verifier, sign};
use proptest::prelude::*;

fn secret_bytes() -> impl Strategy<Value = Vec<u8>> {
    proptest::collection::vec(any::<u8>(), 1..80)
}

proptest! {
    #[test]
    fn sign_then_verify_round_trips(key in secret_bytes(), body in proptest::collection::vec(any::<u8>(), 0..2048)) {
        let secret = Secret::new(key).unwrap();
        let header = sign(&secret, &body);
        let verified = Verifier::new([secret]).unwrap().verify(header.as_bytes(), body.clone()).unwrap();
        prop_assert_eq!(verified.body().as_ref(), &body[..]);
    }

    #[test]
    fn any_single_byte_change_of_the_body_fails(
        key in secret_bytes(),
        body in proptest::collection::vec(any::<u8>(), 1..1024),
        index in any::<prop::sample::Index>(),
        flip in 1u8..=255,
    ) {
        let secret = Secret::new(key).unwrap();
        let header = sign(&secret, &body);
        let mut altered = body.clone();
        altered[index.index(body.len())] ^= flip;
        let result = Verifier::new([secret]).unwrap().verify(header.as_bytes(), altered);
        prop_assert_eq!(result.unwrap_err(), SignatureError::Mismatch);
    }

    #[test]
    fn any_single_digest_change_fails(
        key in secret_bytes(),
        body in proptest::collection::vec(any::<u8>(), 0..512),
        index in 0usize..32,
        flip in 1u8..=255,
    ) {
        let secret = Secret::new(key).unwrap();
        let header = sign(&secret, &body);
        let mut digest = *Signature::parse(header.as_bytes()).unwrap().as_bytes();
        digest[index] ^= flip;
        let altered = format!("sha256={}", hex_lower(&digest));
        let result = Verifier::new([secret]).unwrap().verify(altered.as_bytes(), body);
        prop_assert_eq!(result.unwrap_err(), SignatureError::Mismatch);
    }

    #[test]
    fn the_header_parser_never_panics(header in proptest::collection::vec(any::<u8>(), 0..200)) {
        let _ = Signature::parse(&header);
    }

    #[test]
    fn the_header_parser_never_panics_near_the_valid_form(tail in "[0-9a-fA-Fg-z =,\u{e9}]{0,70}") {
        let header = format!("sha256={tail}");
        if let Ok(signature) = Signature::parse(header.as_bytes()) {
            // Whatever it accepts is exactly 64 hex digits.
            prop_assert_eq!(signature.to_header_value().len(), 7 + 64);
            prop_assert_eq!(tail.trim_matches([' ', '\t']).len(), 64);
        }
    }

    #[test]
    fn the_verifier_never_panics(header in proptest::collection::vec(any::<u8>(), 0..100), body in proptest::collection::vec(any::<u8>(), 0..100)) {
        let verifier = Verifier::new([Secret::new("proptest-secret-0000").unwrap()]).unwrap();
        prop_assert!(verifier.verify(&header, body).is_err());
    }
}

fn hex_lower(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}
