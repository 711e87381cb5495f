//! metav1 Conditions with the transition time kept while the status does not change.

use conda_store_crds::{Condition, ConditionStatus, ConditionType};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::Time;

/// The condition statuses, short.
pub const TRUE: ConditionStatus = ConditionStatus::True;
pub const FALSE: ConditionStatus = ConditionStatus::False;
pub const UNKNOWN: ConditionStatus = ConditionStatus::Unknown;

/// A condition of `type_`, keeping `lastTransitionTime` from `old` when the status is the
/// same (so a rewrite with a new message is not a transition).
pub fn condition(
    old: &[Condition],
    type_: ConditionType,
    status: ConditionStatus,
    reason: &str,
    message: impl Into<String>,
    generation: Option<i64>,
    now: jiff::Timestamp,
) -> Condition {
    // Kubernetes 1.20's server-side apply turns an empty message into null, which the
    // schema refuses: say the reason instead.
    let message = match message.into() {
        m if m.is_empty() => reason.to_string(),
        m => m,
    };
    let since = old
        .iter()
        .find(|c| c.type_ == type_.as_str() && c.status == status.as_str())
        .map_or(Time(now), |c| c.last_transition_time.clone());
    Condition {
        type_: type_.as_str().to_string(),
        status: status.as_str().to_string(),
        reason: reason.to_string(),
        message,
        observed_generation: generation,
        last_transition_time: since,
    }
}

/// Replaces (or adds) the condition of the same type in `list`.
pub fn set(list: &mut Vec<Condition>, c: Condition) {
    match list.iter_mut().find(|o| o.type_ == c.type_) {
        Some(o) => *o = c,
        None => list.push(c),
    }
}

/// The condition of `type_` in `list`.
pub fn get(list: &[Condition], type_: ConditionType) -> Option<&Condition> {
    conda_store_crds::find_condition(list, type_)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn transition_time_kept_while_status_is_the_same() {
        let t0 = jiff::Timestamp::from_second(1_000).unwrap();
        let t1 = jiff::Timestamp::from_second(2_000).unwrap();
        let a = condition(
            &[],
            ConditionType::Ready,
            FALSE,
            "Building",
            "one",
            Some(1),
            t0,
        );
        let b = condition(
            std::slice::from_ref(&a),
            ConditionType::Ready,
            FALSE,
            "Building",
            "two",
            Some(2),
            t1,
        );
        assert_eq!(b.last_transition_time, Time(t0));
        assert_eq!(b.message, "two");
        let c = condition(&[b], ConditionType::Ready, TRUE, "Built", "", Some(2), t1);
        assert_eq!(c.last_transition_time, Time(t1));
    }

    #[test]
    fn set_replaces_by_type() {
        let t = jiff::Timestamp::from_second(1).unwrap();
        let mut list = vec![condition(&[], ConditionType::Ready, TRUE, "x", "", None, t)];
        set(
            &mut list,
            condition(&[], ConditionType::Failed, TRUE, "x", "", None, t),
        );
        set(
            &mut list,
            condition(&[], ConditionType::Ready, FALSE, "y", "", None, t),
        );
        assert_eq!(list.len(), 2);
        assert_eq!(get(&list, ConditionType::Ready).unwrap().status, FALSE);
    }
}
