//! Trace context across the hop (feature `opentelemetry`).
//!
//! A delivery's span (`ltvboost_webhook`) takes the W3C `traceparent` of
//! the request as its parent once the request's signature has verified, so
//! LTVboost's trace, or a proxy's, continues into the receiver; a request
//! that does not verify starts a trace of its own (an unsigned request
//! cannot join, or flood, the sender's trace). In enqueue mode the delivery span's own context is
//! stored with the queue entry, and the worker's span
//! (`ltvboost_webhook_worker`, one for each attempt) takes it as its parent:
//! receipt, every retry and the handler's work sit in one trace.
//!
//! The spans carry OpenTelemetry's semantic conventions: HTTP server
//! attributes (`http.request.method`, `url.path`,
//! `http.response.status_code`, `error.type`) on the delivery span,
//! messaging attributes (`messaging.system`, `messaging.operation.type`,
//! `messaging.destination.name`, `messaging.message.id`) on the worker's.
//!
//! Export them with `tracing-opentelemetry`'s layer; without it, or without
//! the feature, nothing here does any work.
//!
//! ```
//! # #[cfg(feature = "opentelemetry")] {
//! use opentelemetry::trace::TracerProvider as _;
//! use tracing_subscriber::layer::SubscriberExt;
//!
//! let provider = opentelemetry_sdk::trace::SdkTracerProvider::builder().build();
//! let subscriber = tracing_subscriber::registry()
//!     .with(tracing_opentelemetry::layer().with_tracer(provider.tracer("my-service")));
//! tracing::subscriber::set_global_default(subscriber)?;
//! # }
//! # Ok::<(), Box<dyn std::error::Error>>(())
//! ```

/// The W3C trace context header, and the queue entry's field that keeps it.
///
/// ```
/// assert_eq!(ltvboost_webhooks::trace::TRACEPARENT, "traceparent");
/// ```
pub const TRACEPARENT: &str = "traceparent";

#[cfg(feature = "opentelemetry")]
mod otel {
    use opentelemetry::trace::{
        SpanContext, SpanId, TraceContextExt, TraceFlags, TraceId, TraceState,
    };
    use tracing_opentelemetry::OpenTelemetrySpanExt;

    /// `span`'s parent becomes the remote span `traceparent` names; a
    /// malformed value is ignored, as the W3C recommendation asks. Call it
    /// before the span is first entered.
    pub(crate) fn continue_trace(span: &tracing::Span, traceparent: Option<&[u8]>) {
        let Some(parent) = traceparent.and_then(parse) else {
            return;
        };
        let parent = opentelemetry::Context::new().with_remote_span_context(parent);
        // No OpenTelemetry layer installed, or the span is disabled: no trace to continue.
        let _ = span.set_parent(parent);
    }

    /// The current span's context as a `traceparent` value, when an
    /// OpenTelemetry layer records it.
    #[cfg(feature = "queue")]
    pub(crate) fn current_traceparent() -> Option<String> {
        let context = tracing::Span::current().context();
        let span = context.span();
        let span = span.span_context();
        span.is_valid().then(|| {
            format!(
                "00-{}-{}-{:02x}",
                span.trace_id(),
                span.span_id(),
                span.trace_flags().to_u8()
            )
        })
    }

    /// `version-trace_id-parent_id-flags`, by the W3C Trace Context rules:
    /// lowercase hex, ids not all zeros, version `ff` invalid, and a later
    /// version's extra fields (after a `-`) ignored.
    pub(super) fn parse(value: &[u8]) -> Option<SpanContext> {
        let value = std::str::from_utf8(value).ok()?.trim();
        let hex = |s: &str, len: usize| {
            s.len() == len && s.bytes().all(|b| matches!(b, b'0'..=b'9' | b'a'..=b'f'))
        };
        let mut parts = value.splitn(5, '-');
        let (version, trace_id, span_id, flags) =
            (parts.next()?, parts.next()?, parts.next()?, parts.next()?);
        let rest = parts.next();
        if !hex(version, 2) || version == "ff" || (version == "00" && rest.is_some()) {
            return None;
        }
        if !hex(trace_id, 32) || !hex(span_id, 16) || !hex(flags, 2) {
            return None;
        }
        let trace_id = TraceId::from_hex(trace_id).ok()?;
        let span_id = SpanId::from_hex(span_id).ok()?;
        if trace_id == TraceId::INVALID || span_id == SpanId::INVALID {
            return None;
        }
        let flags = u8::from_str_radix(flags, 16).ok()? & TraceFlags::SAMPLED.to_u8();
        Some(SpanContext::new(
            trace_id,
            span_id,
            TraceFlags::new(flags),
            true,
            TraceState::default(),
        ))
    }
}

/// `span`'s parent becomes the remote span `traceparent` names (with the
/// `opentelemetry` feature; nothing without it). Call it before the span is
/// first entered.
pub(crate) fn continue_trace(span: &tracing::Span, traceparent: Option<&[u8]>) {
    #[cfg(feature = "opentelemetry")]
    otel::continue_trace(span, traceparent);
    #[cfg(not(feature = "opentelemetry"))]
    let _ = (span, traceparent);
}

/// The current span's context as a `traceparent` value, to store with a
/// queue entry (with the `opentelemetry` feature; none without it).
#[cfg(feature = "queue")]
pub(crate) fn current_traceparent() -> Option<String> {
    #[cfg(feature = "opentelemetry")]
    {
        otel::current_traceparent()
    }
    #[cfg(not(feature = "opentelemetry"))]
    {
        None
    }
}

#[cfg(all(test, feature = "opentelemetry"))]
mod tests {
    use super::otel::parse;

    #[test]
    fn traceparent_values() {
        let good = b"00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01";
        let parsed = parse(good).expect("the W3C example");
        assert_eq!(
            parsed.trace_id().to_string(),
            "4bf92f3577b34da6a3ce929d0e0e4736"
        );
        assert_eq!(parsed.span_id().to_string(), "00f067aa0ba902b7");
        assert!(parsed.is_sampled() && parsed.is_remote());
        // A later version may add fields.
        assert!(parse(b"01-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-00-what").is_some());
        for bad in [
            &b""[..],
            b"00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01-extra",
            b"ff-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01",
            b"00-00000000000000000000000000000000-00f067aa0ba902b7-01",
            b"00-4bf92f3577b34da6a3ce929d0e0e4736-0000000000000000-01",
            b"00-4BF92F3577B34DA6A3CE929D0E0E4736-00f067aa0ba902b7-01",
            b"00-4bf92f3577b34da6a3ce929d0e0e473-00f067aa0ba902b7-01",
            b"00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-1",
            b"\xff\xfe",
        ] {
            assert!(parse(bad).is_none(), "{}", String::from_utf8_lossy(bad));
        }
    }
}
