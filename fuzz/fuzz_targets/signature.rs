//! The header parser and verifier on arbitrary bytes: never a panic, and a
//! header that verifies is exactly the signature of the body.
#![no_main]

use libfuzzer_sys::fuzz_target;
use ltvboost_webhooks::signature::{Secret, Signature, Verifier, sign};
use std::sync::OnceLock;

fn secrets() -> &'static (Secret, Secret, Verifier) {
    static SECRETS: OnceLock<(Secret, Secret, Verifier)> = OnceLock::new();
    SECRETS.get_or_init(|| {
        let a = Secret::new("fuzz-secret-number-one-000").unwrap();
        let b = Secret::new("fuzz-secret-number-two-000").unwrap();
        let verifier = Verifier::new([a.clone(), b.clone()]).unwrap();
        (a, b, verifier)
    })
}

fuzz_target!(|data: &[u8]| {
    let (a, b, verifier) = secrets();
    // First byte: how much of the rest is the header; the remainder is the body.
    let Some((&split, rest)) = data.split_first() else { return };
    let split = usize::from(split).min(rest.len());
    let (header, body) = rest.split_at(split);

    let _ = Signature::parse(header);
    if let Ok(verified) = verifier.verify(header, body.to_vec()) {
        let secret = [a, b][verified.secret_index()];
        let expected = sign(secret, body);
        assert_eq!(Signature::parse(expected.as_bytes()).ok().as_ref(), Some(verified.signature()));
        assert_eq!(verified.body().as_ref(), body);
    }
    // Whatever the body, its own signature verifies, and a changed one does not.
    let good = sign(a, body);
    assert!(verifier.verify(good.as_bytes(), body.to_vec()).is_ok());
    let mut bad = good.into_bytes();
    let last = bad.len() - 1;
    bad[last] = if bad[last] == b'0' { b'1' } else { b'0' };
    assert!(verifier.verify(&bad, body.to_vec()).is_err());
});
