//! Allocations on the hot path, counted: unlike timings they are
//! deterministic, so they can be asserted. Each test counts only the
//! allocations made on its own thread.

#![allow(unsafe_code)] // a counting global allocator must implement `GlobalAlloc`

use std::alloc::{GlobalAlloc, Layout, System};
use std::cell::Cell;
use std::time::Duration;

use bytes::Bytes;
use ltvboost_webhooks::dedupe::{Claim, DedupeStore, MemoryStore};
use ltvboost_webhooks::event::{Envelope, Event};

/// The system allocator, counting the allocations of threads that ask.
struct Counting;

thread_local! {
    static COUNTING: Cell<bool> = const { Cell::new(false) };
    static COUNT: Cell<usize> = const { Cell::new(0) };
}

fn note() {
    // `try_with`: a thread being torn down has no locals left to count in.
    let _ = COUNTING.try_with(|on| {
        if on.get() {
            let _ = COUNT.try_with(|n| n.set(n.get() + 1));
        }
    });
}

// SAFETY: every call is passed on to `System` unchanged; counting touches
// only const-initialised thread locals, which never allocate.
unsafe impl GlobalAlloc for Counting {
    unsafe fn alloc(&self, layout: Layout) -> *mut u8 {
        note();
        unsafe { System.alloc(layout) }
    }
    unsafe fn alloc_zeroed(&self, layout: Layout) -> *mut u8 {
        note();
        unsafe { System.alloc_zeroed(layout) }
    }
    unsafe fn realloc(&self, ptr: *mut u8, layout: Layout, new_size: usize) -> *mut u8 {
        note();
        unsafe { System.realloc(ptr, layout, new_size) }
    }
    unsafe fn dealloc(&self, ptr: *mut u8, layout: Layout) {
        unsafe { System.dealloc(ptr, layout) }
    }
}

#[global_allocator]
static ALLOCATOR: Counting = Counting;

/// How many allocations `f` makes on this thread, and what it returns.
fn allocations<T>(f: impl FnOnce() -> T) -> (usize, T) {
    COUNT.with(|n| n.set(0));
    COUNTING.with(|on| on.set(true));
    let out = f();
    COUNTING.with(|on| on.set(false));
    (COUNT.with(Cell::get), out)
}

#[test]
fn the_parse_allocates_per_member_not_per_byte() {
    // The body is shared, never copied: a body with a hundred times more
    // answers costs the same number of allocations to parse.
    let body = |answers: usize| {
        let answers = vec![r#"{"q":"goal","a":"grow"}"#; answers].join(",");
        Bytes::from(format!(
            r#"{{"id":"evt_1","type":"response.created","created_at":"2026-11-27T10:00:00Z","data":{{"id":"rsp_1","email":"a@b.c","answers":[{answers}]}}}}"#
        ))
    };
    let (small, large) = (body(1), body(100));
    let (small_count, envelope) = allocations(|| Envelope::from_bytes(small.clone()).unwrap());
    assert_eq!(envelope.id(), Some("evt_1"));
    assert_eq!(envelope.created_at(), Some("2026-11-27T10:00:00Z"));
    assert!(matches!(envelope.event(), Ok(Event::ResponseCreated(r)) if r.id == "rsp_1"));
    let (large_count, _) = allocations(|| Envelope::from_bytes(large.clone()).unwrap());
    assert_eq!(small_count, large_count);
}

#[tokio::test(flavor = "current_thread")]
async fn a_memory_store_claim_and_done_record_allocate_nothing() {
    let store = MemoryStore::with_capacity(1024);
    let lease = Duration::from_secs(120);
    let ttl = Duration::from_secs(3600);
    let deliver = |key: String| {
        let store = &store;
        async move {
            let Claim::Acquired(token) = store.claim(&key, lease).await.unwrap() else {
                panic!("{key} was not acquired")
            };
            store.mark_done(&key, &token, ttl).await.unwrap();
        }
    };
    // The first delivery sets up one expiry queue per lifetime.
    deliver("evt:warm-up".to_owned()).await;
    let keys: Vec<String> = (0..100).map(|n| format!("evt:evt_{n}")).collect();
    for key in keys {
        // The future is polled to the end inside the count: the store's
        // futures are ready at once.
        let (count, ()) = allocations(|| {
            let mut future = std::pin::pin!(deliver(key));
            let waker = std::task::Waker::noop();
            match future
                .as_mut()
                .poll(&mut std::task::Context::from_waker(waker))
            {
                std::task::Poll::Ready(()) => {}
                std::task::Poll::Pending => panic!("the memory store never waits"),
            }
        });
        assert_eq!(count, 0);
    }
    assert_eq!(store.len(), 101);
}
