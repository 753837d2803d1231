//! A dudect timing-leak test of signature verification.
//!
//! ```sh
//! cargo run --release -p ltvboost-bench --bin timing_leak
//! ```
//!
//! dudect times one function on two classes of inputs, interleaved at random,
//! and runs Welch's t-test on the two timing distributions (cropped at many
//! percentiles; the largest |t| is reported). |t| > 5 is strong evidence that
//! the time depends on the class; |t| < 5 means no evidence of a leak.
//!
//! * `verify_first_vs_last_byte`: `Verifier::verify` on digests wrong in the
//!   first byte versus wrong in the last. An early-exit compare would take
//!   longer on the second; ours must not.
//! * `verify_last_vs_first_byte`: the same inputs with the classes swapped,
//!   and `verify_null_same_input`: identical classes. These are the controls
//!   for the harness: on a shared VM, slow drift can push |t| past 5, and
//!   only an effect that follows the input (the sign flips when the classes
//!   swap) and grows with the sample count is a leak.
//! * `verify_correct_vs_last_byte`: a correct digest versus one wrong in the
//!   last byte: success does a little more bookkeeping (it records which secret
//!   matched and when), which this shows; the answer (200 or 401) tells the
//!   sender as much anyway.
//! * `compare_correct_vs_last_byte`: the digest comparison alone (decoded
//!   bytes, `subtle`), correct versus wrong in the last byte.
//! * `naive_first_vs_last_byte`: the positive control, LTVboost's documented
//!   `===` on the hex text, written as the byte-by-byte early return that it
//!   is: the test must flag it, or it proves nothing.

use std::hint::black_box;

use dudect_bencher::{BenchRng, Class, CtRunner, ctbench_main};
use ltvboost_webhooks::signature::{Secret, Signature, Verifier, sign};
use subtle::ConstantTimeEq;

/// Measurements per test; `DUDECT_SAMPLES` overrides. A real leak's |t|
/// grows with the square root of the sample count; noise's does not.
fn samples() -> usize {
    std::env::var("DUDECT_SAMPLES")
        .ok()
        .and_then(|n| n.parse().ok())
        .unwrap_or(1_000_000)
}
const BODY: &[u8] = &[b'x'; 1024];

/// A small deterministic generator: the classes are interleaved at random so
/// that drift in the machine's speed hits both alike.
struct SplitMix(u64);

impl SplitMix {
    fn next(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9e37_79b9_7f4a_7c15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
        z ^ (z >> 31)
    }
}

fn secret() -> Secret {
    Secret::new("dudect-secret-0123456789abcdef").unwrap()
}

/// The correct header, with the hex digit at `position` changed (or none).
///
/// The digit stays in its class (a decimal digit for a decimal digit, a letter
/// for a letter): hex decoding branches on the class, and that depends only
/// on what the sender sent, which the sender knows. What must not show is how
/// far the digest comparison got.
fn header_with_change(position: Option<usize>) -> String {
    let mut header = sign(&secret(), BODY).into_bytes();
    if let Some(i) = position {
        let at = "sha256=".len() + i;
        header[at] = match header[at] {
            b'9' => b'8',
            b'f' => b'e',
            other => other + 1,
        };
    }
    String::from_utf8(header).unwrap()
}

/// [`samples`] coin flips: `true` is the left class.
fn classes(seed: u64) -> impl Iterator<Item = (bool, Class)> {
    let mut rng = SplitMix(seed);
    (0..samples()).map(move |_| {
        let left = rng.next() & 1 == 0;
        (left, if left { Class::Left } else { Class::Right })
    })
}

fn run_verify(runner: &mut CtRunner, left: &str, right: &str, seed: u64) {
    let verifier = Verifier::new([secret()]).unwrap();
    let body = bytes::Bytes::from_static(BODY);
    for (is_left, class) in classes(seed) {
        let header = if is_left { left } else { right };
        runner.run_one(class, || {
            black_box(
                verifier
                    .verify(black_box(header.as_bytes()), body.clone())
                    .is_ok(),
            )
        });
    }
}

fn verify_first_vs_last_byte(runner: &mut CtRunner, _: &mut BenchRng) {
    run_verify(
        runner,
        &header_with_change(Some(0)),
        &header_with_change(Some(63)),
        1,
    );
}

/// The null test: both classes identical. What |t| reaches here is the
/// harness's own noise on this machine.
fn verify_null_same_input(runner: &mut CtRunner, _: &mut BenchRng) {
    run_verify(
        runner,
        &header_with_change(Some(0)),
        &header_with_change(Some(0)),
        1,
    );
}

/// `verify_first_vs_last_byte` with the inputs swapped between the classes
/// and the same class sequence: a leak flips the sign of t; drift that
/// follows the sequence does not.
fn verify_last_vs_first_byte(runner: &mut CtRunner, _: &mut BenchRng) {
    run_verify(
        runner,
        &header_with_change(Some(63)),
        &header_with_change(Some(0)),
        1,
    );
}

fn verify_correct_vs_last_byte(runner: &mut CtRunner, _: &mut BenchRng) {
    run_verify(
        runner,
        &header_with_change(None),
        &header_with_change(Some(63)),
        2,
    );
}

fn compare_correct_vs_last_byte(runner: &mut CtRunner, _: &mut BenchRng) {
    let expected = *Signature::parse(header_with_change(None).as_bytes())
        .unwrap()
        .as_bytes();
    let correct = expected;
    let wrong = *Signature::parse(header_with_change(Some(63)).as_bytes())
        .unwrap()
        .as_bytes();
    for (is_left, class) in classes(3) {
        let given = if is_left { &correct } else { &wrong };
        runner.run_one(class, || {
            black_box(bool::from(black_box(&expected).ct_eq(black_box(given))))
        });
    }
}

/// `a === b` on strings: stops at the first differing byte.
#[inline(never)]
fn naive_eq(a: &[u8], b: &[u8]) -> bool {
    if a.len() != b.len() {
        return false;
    }
    for i in 0..a.len() {
        if black_box(a[i]) != black_box(b[i]) {
            return false;
        }
    }
    true
}

fn naive_first_vs_last_byte(runner: &mut CtRunner, _: &mut BenchRng) {
    let expected = header_with_change(None);
    let (first, last) = (header_with_change(Some(0)), header_with_change(Some(63)));
    for (is_left, class) in classes(4) {
        let given = if is_left { &first } else { &last };
        runner.run_one(class, || {
            black_box(naive_eq(expected.as_bytes(), black_box(given.as_bytes())))
        });
    }
}

ctbench_main!(
    verify_null_same_input,
    verify_first_vs_last_byte,
    verify_last_vs_first_byte,
    verify_correct_vs_last_byte,
    compare_correct_vs_last_byte,
    naive_first_vs_last_byte
);
