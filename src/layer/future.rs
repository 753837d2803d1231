use std::future::Future;
use std::pin::Pin;
use std::task::{Context, Poll, ready};

use bytes::Bytes;
use http::Response;
use http_body_util::Full;
use pin_project_lite::pin_project;

use super::ResponseBody;

type Answering = Pin<Box<dyn Future<Output = Response<Full<Bytes>>> + Send>>;

pin_project! {
    /// The response future of [`WebhookService`](super::WebhookService).
    pub struct ResponseFuture<F> {
        #[pin]
        kind: Kind<F>,
    }
}

pin_project! {
    #[project = KindProj]
    enum Kind<F> {
        Inner { #[pin] future: F },
        Webhook { future: Answering },
        Ready { response: Option<Response<Full<Bytes>>> },
    }
}

impl<F> ResponseFuture<F> {
    pub(super) fn inner(future: F) -> Self {
        Self {
            kind: Kind::Inner { future },
        }
    }

    pub(super) fn ready(response: Response<Full<Bytes>>) -> Self {
        Self {
            kind: Kind::Ready {
                response: Some(response),
            },
        }
    }

    pub(super) fn webhook(future: Answering) -> Self {
        Self {
            kind: Kind::Webhook { future },
        }
    }
}

impl<F, B, E> Future for ResponseFuture<F>
where
    F: Future<Output = Result<Response<B>, E>>,
{
    type Output = Result<Response<ResponseBody<B>>, E>;

    fn poll(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Self::Output> {
        match self.project().kind.project() {
            KindProj::Inner { future } => {
                let response = ready!(future.poll(cx))?;
                Poll::Ready(Ok(response.map(ResponseBody::inner)))
            }
            // Polled again after completing (a misuse): stay pending.
            KindProj::Ready { response } => match response.take() {
                Some(response) => Poll::Ready(Ok(response.map(ResponseBody::answer))),
                None => Poll::Pending,
            },
            KindProj::Webhook { future } => {
                let response = ready!(future.as_mut().poll(cx));
                Poll::Ready(Ok(response.map(ResponseBody::answer)))
            }
        }
    }
}

impl<F> std::fmt::Debug for ResponseFuture<F> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ResponseFuture").finish_non_exhaustive()
    }
}
