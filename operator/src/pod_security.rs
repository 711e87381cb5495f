//! The Pod Security Standard "restricted" profile (Kubernetes 1.25's), checked field by field.
//!
//! Kubernetes 1.20, the only control plane the tests can run, has no Pod Security admission, so
//! the profile is checked here instead: on every Job spec the operator makes (unit tests) and
//! on every pod template the chart renders (`conda-store-operator check-pod-security`, run by
//! the deploy e2e). Each violation names the field, as the admission plugin would.

use k8s_openapi::api::core::v1::{Container, PodSpec, SecurityContext};
use serde_json::Value;

/// Volume types "restricted" allows.
const ALLOWED_VOLUMES: [&str; 8] = [
    "configMap",
    "csi",
    "downwardAPI",
    "emptyDir",
    "ephemeral",
    "persistentVolumeClaim",
    "projected",
    "secret",
];

/// Sysctls the "baseline" (and so "restricted") profile allows.
const SAFE_SYSCTLS: [&str; 5] = [
    "kernel.shm_rmid_forced",
    "net.ipv4.ip_local_port_range",
    "net.ipv4.ip_unprivileged_port_start",
    "net.ipv4.tcp_syncookies",
    "net.ipv4.ping_group_range",
];

/// Every way `pod` breaks the "restricted" profile (empty when it passes).
pub fn restricted_violations(pod: &PodSpec) -> Vec<String> {
    let mut v = Vec::new();
    if pod.host_network == Some(true) {
        v.push("spec.hostNetwork must not be true".into());
    }
    if pod.host_pid == Some(true) {
        v.push("spec.hostPID must not be true".into());
    }
    if pod.host_ipc == Some(true) {
        v.push("spec.hostIPC must not be true".into());
    }
    // Volume types: every volume source set on a volume, by its JSON field name.
    for vol in pod.volumes.iter().flatten() {
        let json = serde_json::to_value(vol).unwrap_or(Value::Null);
        for key in json.as_object().into_iter().flat_map(|o| o.keys()) {
            if key != "name" && !ALLOWED_VOLUMES.contains(&key.as_str()) {
                v.push(format!(
                    "spec.volumes[{}]: {key} volumes are not allowed",
                    vol.name
                ));
            }
        }
    }
    let psc = pod.security_context.as_ref();
    for s in psc.and_then(|s| s.sysctls.as_ref()).into_iter().flatten() {
        if !SAFE_SYSCTLS.contains(&s.name.as_str()) {
            v.push(format!(
                "spec.securityContext.sysctls: {} is not allowed",
                s.name
            ));
        }
    }
    if psc.and_then(|s| s.run_as_user) == Some(0) {
        v.push("spec.securityContext.runAsUser must not be 0".into());
    }
    let pod_non_root = psc.and_then(|s| s.run_as_non_root);
    if pod_non_root == Some(false) {
        v.push("spec.securityContext.runAsNonRoot must not be false".into());
    }
    let pod_seccomp = psc
        .and_then(|s| s.seccomp_profile.as_ref())
        .map(|p| p.type_.as_str());
    if let Some(t) = pod_seccomp
        && !matches!(t, "RuntimeDefault" | "Localhost")
    {
        v.push(format!(
            "spec.securityContext.seccompProfile.type must be RuntimeDefault or Localhost, not {t}"
        ));
    }
    if let Some(se) = psc.and_then(|s| s.se_linux_options.as_ref()) {
        selinux(
            &mut v,
            "spec.securityContext",
            se.type_.as_deref(),
            &se.user,
            &se.role,
        );
    }
    let containers = pod.containers.iter().map(|c| ("containers", c)).chain(
        pod.init_containers
            .iter()
            .flatten()
            .map(|c| ("initContainers", c)),
    );
    for (kind, c) in containers {
        container(&mut v, kind, c, pod_non_root, pod_seccomp);
    }
    v
}

fn selinux(
    v: &mut Vec<String>,
    at: &str,
    t: Option<&str>,
    user: &Option<String>,
    role: &Option<String>,
) {
    if let Some(t) = t
        && !matches!(
            t,
            "" | "container_t" | "container_init_t" | "container_kvm_t"
        )
    {
        v.push(format!("{at}.seLinuxOptions.type {t} is not allowed"));
    }
    if user.as_deref().is_some_and(|u| !u.is_empty())
        || role.as_deref().is_some_and(|r| !r.is_empty())
    {
        v.push(format!("{at}.seLinuxOptions.user and role must not be set"));
    }
}

fn container(
    v: &mut Vec<String>,
    kind: &str,
    c: &Container,
    pod_non_root: Option<bool>,
    pod_seccomp: Option<&str>,
) {
    let at = format!("spec.{kind}[{}]", c.name);
    let sc: SecurityContext = c.security_context.clone().unwrap_or_default();
    if sc.privileged == Some(true) {
        v.push(format!("{at}.securityContext.privileged must not be true"));
    }
    if sc.allow_privilege_escalation != Some(false) {
        v.push(format!(
            "{at}.securityContext.allowPrivilegeEscalation must be false"
        ));
    }
    match sc.run_as_non_root.or(pod_non_root) {
        Some(true) => {}
        _ => v.push(format!(
            "{at}.securityContext.runAsNonRoot must be true (here or on the pod)"
        )),
    }
    if sc.run_as_user == Some(0) {
        v.push(format!("{at}.securityContext.runAsUser must not be 0"));
    }
    match sc
        .seccomp_profile
        .as_ref()
        .map(|p| p.type_.as_str())
        .or(pod_seccomp)
    {
        Some("RuntimeDefault" | "Localhost") => {}
        Some(t) => v.push(format!(
            "{at}.securityContext.seccompProfile.type must be RuntimeDefault or Localhost, not {t}"
        )),
        None => v.push(format!(
            "{at}.securityContext.seccompProfile.type must be set (here or on the pod)"
        )),
    }
    let caps = sc.capabilities.clone().unwrap_or_default();
    if !caps.drop.iter().flatten().any(|d| d == "ALL") {
        v.push(format!(
            "{at}.securityContext.capabilities.drop must include ALL"
        ));
    }
    for a in caps.add.iter().flatten() {
        if a != "NET_BIND_SERVICE" {
            v.push(format!(
                "{at}.securityContext.capabilities.add: {a} is not allowed"
            ));
        }
    }
    if let Some(p) = sc.proc_mount.as_deref()
        && p != "Default"
    {
        v.push(format!("{at}.securityContext.procMount must be Default"));
    }
    if let Some(se) = sc.se_linux_options.as_ref() {
        selinux(
            v,
            &format!("{at}.securityContext"),
            se.type_.as_deref(),
            &se.user,
            &se.role,
        );
    }
    for p in c.ports.iter().flatten() {
        if p.host_port.is_some_and(|h| h != 0) {
            v.push(format!(
                "{at}.ports: hostPort {} is not allowed",
                p.host_port.unwrap_or(0)
            ));
        }
    }
}

/// The pod specs in a Kubernetes manifest (a Pod, or a workload's pod template), by a name
/// for messages.
pub fn pod_specs(doc: &Value) -> Vec<(String, Value)> {
    let kind = doc["kind"].as_str().unwrap_or_default();
    let name = format!("{kind}/{}", doc["metadata"]["name"].as_str().unwrap_or("?"));
    let spec = match kind {
        "Pod" => &doc["spec"],
        "Deployment" | "StatefulSet" | "DaemonSet" | "ReplicaSet" | "Job" => {
            &doc["spec"]["template"]["spec"]
        }
        "CronJob" => &doc["spec"]["jobTemplate"]["spec"]["template"]["spec"],
        _ => return Vec::new(),
    };
    vec![(name, spec.clone())]
}

#[cfg(test)]
mod tests {
    use super::*;
    use k8s_openapi::api::core::v1::{
        Capabilities, HostPathVolumeSource, PodSecurityContext, SeccompProfile, Volume,
    };

    fn passing() -> PodSpec {
        PodSpec {
            security_context: Some(PodSecurityContext {
                run_as_non_root: Some(true),
                run_as_user: Some(65532),
                seccomp_profile: Some(SeccompProfile {
                    type_: "RuntimeDefault".into(),
                    localhost_profile: None,
                }),
                ..Default::default()
            }),
            containers: vec![Container {
                name: "c".into(),
                security_context: Some(SecurityContext {
                    allow_privilege_escalation: Some(false),
                    capabilities: Some(Capabilities {
                        drop: Some(vec!["ALL".into()]),
                        add: None,
                    }),
                    ..Default::default()
                }),
                ..Default::default()
            }],
            ..Default::default()
        }
    }

    #[test]
    fn each_rule_names_its_field() {
        assert_eq!(restricted_violations(&passing()), Vec::<String>::new());
        type Breaker = Box<dyn Fn(&mut PodSpec)>;
        let cases: Vec<(Breaker, &str)> = vec![
            (Box::new(|p| p.host_network = Some(true)), "hostNetwork"),
            (
                Box::new(|p| p.security_context.as_mut().unwrap().seccomp_profile = None),
                "seccompProfile",
            ),
            (
                Box::new(|p| p.security_context.as_mut().unwrap().run_as_non_root = None),
                "runAsNonRoot",
            ),
            (
                Box::new(|p| {
                    p.containers[0]
                        .security_context
                        .as_mut()
                        .unwrap()
                        .allow_privilege_escalation = None
                }),
                "allowPrivilegeEscalation",
            ),
            (
                Box::new(|p| {
                    p.containers[0]
                        .security_context
                        .as_mut()
                        .unwrap()
                        .capabilities = None
                }),
                "capabilities.drop",
            ),
            (
                Box::new(|p| {
                    p.containers[0]
                        .security_context
                        .as_mut()
                        .unwrap()
                        .capabilities
                        .as_mut()
                        .unwrap()
                        .add = Some(vec!["SYS_ADMIN".into()])
                }),
                "SYS_ADMIN",
            ),
            (
                Box::new(|p| {
                    p.volumes = Some(vec![Volume {
                        name: "v".into(),
                        host_path: Some(HostPathVolumeSource {
                            path: "/".into(),
                            type_: None,
                        }),
                        ..Default::default()
                    }])
                }),
                "hostPath volumes",
            ),
        ];
        for (break_it, field) in cases {
            let mut p = passing();
            break_it(&mut p);
            let v = restricted_violations(&p);
            assert!(v.iter().any(|m| m.contains(field)), "{field}: {v:?}");
        }
    }
}
