//! The HTTP client of solves and installs, and what its failures may tell.
//!
//! A channel URL is a tenant's input: it can point a build pod at any address. So connecting
//! and waiting for bytes are bounded (a "channel" that accepts and never answers fails the step
//! in about a minute instead of holding a build slot until the Job's deadline), and a
//! connection that fails is reported the same way whether it was refused, reset or timed out,
//! so a build's error is no port scanner.

use std::error::Error;
use std::time::Duration;

/// How long connecting to a channel may take.
pub const CONNECT_TIMEOUT: Duration = Duration::from_secs(15);
/// How long a channel may send nothing while a response is read.
pub const IDLE_TIMEOUT: Duration = Duration::from_secs(60);

/// A client with the default bounds.
pub fn client() -> reqwest::Client {
    client_with(CONNECT_TIMEOUT, IDLE_TIMEOUT)
}

/// A client whose connects take at most `connect` and whose reads wait at most `idle` for the
/// next bytes.
pub fn client_with(connect: Duration, idle: Duration) -> reqwest::Client {
    crate::tls::ensure_crypto_provider();
    reqwest::Client::builder()
        .connect_timeout(connect)
        .read_timeout(idle)
        .build()
        .expect("an HTTP client with rustls")
}

/// The error chain of `e` for a person, with any transport failure (refused, reset, timed out,
/// name not found) told as one: "could not be reached", naming the request's URL or else
/// `channels`. TLS failures keep their cause (an untrusted certificate is the person's to fix).
pub fn describe(e: &(dyn Error + 'static), channels: &[String]) -> String {
    let mut source: Option<&(dyn Error + 'static)> = Some(e);
    let mut url = None;
    let mut transport = false;
    while let Some(s) = source {
        if let Some(r) = s.downcast_ref::<reqwest::Error>() {
            url = url.or_else(|| r.url().map(|u| u.to_string()));
            transport |= r.is_connect() || r.is_timeout() || r.is_request() || r.is_body();
        }
        if let Some(io) = s.downcast_ref::<std::io::Error>() {
            use std::io::ErrorKind::*;
            transport |= matches!(
                io.kind(),
                ConnectionRefused | ConnectionReset | ConnectionAborted | TimedOut | UnexpectedEof
            );
        }
        // Wrappers that forward `source` past the reqwest error itself still say so.
        let text = s.to_string().to_ascii_lowercase();
        if text.contains("certificate") || text.contains("tls") {
            return error_chain(e);
        }
        transport |= [
            "error sending request",
            "connection refused",
            "connection reset",
            "timed out",
            "dns error",
            "tcp connect error",
            "error decoding response body",
            "operation timed out",
        ]
        .iter()
        .any(|t| text.contains(t));
        source = s.source();
    }
    if transport {
        let what = match url {
            Some(u) => format!("the channel {u}"),
            None if channels.len() == 1 => format!("the channel {}", channels[0]),
            None => format!("one of the channels {}", channels.join(", ")),
        };
        return format!(
            "{what} could not be reached or did not answer in time \
             (refused connections, resets and timeouts are not told apart)"
        );
    }
    error_chain(e)
}

/// An error with its causes, `outer: inner: innermost` (a TLS or connection failure is
/// several layers down in reqwest's errors).
pub(crate) fn error_chain(error: &dyn std::error::Error) -> String {
    let mut message = error.to_string();
    let mut source = error.source();
    while let Some(e) = source {
        message.push_str(": ");
        message.push_str(&e.to_string());
        source = e.source();
    }
    message
}
