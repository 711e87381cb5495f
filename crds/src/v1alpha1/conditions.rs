//! The condition types and statuses the resources' statuses carry: every one the operator sets
//! and the gateway reads is named here once (the conditions themselves are metav1 Conditions,
//! whose `type` and `status` are strings on the wire).

use super::Condition;

/// A condition's type.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum ConditionType {
    /// Namespace: its Kubernetes namespace exists. Environment: its current build is usable.
    Ready,
    /// Environment: a build of its specification is queued or running.
    Building,
    /// Environment: its latest build failed or was canceled, or its spec is invalid.
    Failed,
    /// Build: the solve step.
    Solved,
    /// Build: the install step.
    Installed,
    /// Build: the pack step.
    Packed,
    /// Build: the image step.
    ImageBuilt,
}

impl ConditionType {
    /// The `type` on the wire.
    pub const fn as_str(self) -> &'static str {
        match self {
            ConditionType::Ready => "Ready",
            ConditionType::Building => "Building",
            ConditionType::Failed => "Failed",
            ConditionType::Solved => "Solved",
            ConditionType::Installed => "Installed",
            ConditionType::Packed => "Packed",
            ConditionType::ImageBuilt => "ImageBuilt",
        }
    }
}

/// A condition's status.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum ConditionStatus {
    /// It holds.
    True,
    /// It does not hold.
    False,
    /// Not known yet (a step that is running).
    Unknown,
}

impl ConditionStatus {
    /// The `status` on the wire.
    pub const fn as_str(self) -> &'static str {
        match self {
            ConditionStatus::True => "True",
            ConditionStatus::False => "False",
            ConditionStatus::Unknown => "Unknown",
        }
    }
}

/// The condition of type `t` in `list`.
pub fn find_condition(list: &[Condition], t: ConditionType) -> Option<&Condition> {
    list.iter().find(|c| c.type_ == t.as_str())
}

/// Whether `list` holds `t` with status `True`.
pub fn is_true(list: &[Condition], t: ConditionType) -> bool {
    find_condition(list, t).is_some_and(|c| c.status == ConditionStatus::True.as_str())
}

/// `condition.status == ConditionStatus::True`: the wire form is a string.
impl PartialEq<ConditionStatus> for String {
    fn eq(&self, other: &ConditionStatus) -> bool {
        self == other.as_str()
    }
}

/// `condition.type_ == ConditionType::Ready`: the wire form is a string.
impl PartialEq<ConditionType> for String {
    fn eq(&self, other: &ConditionType) -> bool {
        self == other.as_str()
    }
}
