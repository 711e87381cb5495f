//! Leader election on a `coordination.k8s.io` Lease: whether to take, renew or leave it.

use std::time::Duration;

/// What the Lease shows.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LeaseView {
    pub holder: Option<String>,
    /// When the holder last renewed it.
    pub renewed: Option<jiff::Timestamp>,
    /// How long a renewal holds.
    pub duration: Duration,
}

/// The next move.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum LeaseAction {
    /// Ours: renew it.
    Renew,
    /// Free or expired: take it (a conditional update, so only one candidate wins).
    Acquire,
    /// Someone else holds it.
    Follow,
}

/// Decides for `me` at `now`.
pub fn lease_action(lease: &LeaseView, me: &str, now: jiff::Timestamp) -> LeaseAction {
    match (&lease.holder, lease.renewed) {
        (Some(h), _) if h == me => LeaseAction::Renew,
        (None, _) | (_, None) => LeaseAction::Acquire,
        (Some(h), _) if h.is_empty() => LeaseAction::Acquire,
        (Some(_), Some(renewed)) => {
            let expires = renewed
                .checked_add(jiff::SignedDuration::try_from(lease.duration).unwrap_or_default())
                .unwrap_or(renewed);
            if now > expires {
                LeaseAction::Acquire
            } else {
                LeaseAction::Follow
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn at(s: i64) -> jiff::Timestamp {
        jiff::Timestamp::from_second(s).unwrap()
    }

    fn lease(holder: Option<&str>, renewed: Option<i64>) -> LeaseView {
        LeaseView {
            holder: holder.map(Into::into),
            renewed: renewed.map(at),
            duration: Duration::from_secs(15),
        }
    }

    #[test]
    fn decisions() {
        assert_eq!(
            lease_action(&lease(None, None), "a", at(0)),
            LeaseAction::Acquire
        );
        assert_eq!(
            lease_action(&lease(Some(""), Some(5)), "a", at(6)),
            LeaseAction::Acquire
        );
        assert_eq!(
            lease_action(&lease(Some("a"), Some(0)), "a", at(100)),
            LeaseAction::Renew
        );
        assert_eq!(
            lease_action(&lease(Some("b"), Some(100)), "a", at(110)),
            LeaseAction::Follow
        );
        assert_eq!(
            lease_action(&lease(Some("b"), Some(100)), "a", at(116)),
            LeaseAction::Acquire
        );
    }
}
