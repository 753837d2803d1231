//! An error's text with its causes, for errors whose own text says little
//! alone (reqwest's "error sending request", deadpool's "Error occurred
//! while creating a new object").

/// `outer: inner: innermost`; a cause whose text the text so far already
/// holds (some errors repeat their source in their own text) is not
/// repeated.
pub(crate) fn with_causes(error: &dyn std::error::Error) -> String {
    let mut text = error.to_string();
    let mut cause = error.source();
    while let Some(inner) = cause {
        let next = inner.to_string();
        if !text.contains(&next) {
            text.push_str(": ");
            text.push_str(&next);
        }
        cause = inner.source();
    }
    text
}
