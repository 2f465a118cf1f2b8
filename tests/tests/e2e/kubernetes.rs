//! The Kubernetes base (deploy/kubernetes), rendered as kustomize would render it (its
//! resources, namespace and generated ConfigMap; no kustomize binary reaches this machine),
//! and checked against the services themselves: the ports and probes are the ones each
//! service listens on and answers, and every ERIOP_* variable is a setting they know (a
//! service refuses to start on an unknown one).

use std::collections::BTreeSet;
use std::path::Path;

use serde_json::Value;

const RENDER: &str = r##"
import json, os, sys, yaml
base = sys.argv[1]
k = yaml.safe_load(open(os.path.join(base, "kustomization.yaml")))
docs = []
for resource in k["resources"]:
    docs += [d for d in yaml.safe_load_all(open(os.path.join(base, resource))) if d]
for generator in k.get("configMapGenerator", []):
    data = {}
    for env in generator.get("envs", []):
        for line in open(os.path.join(base, env)):
            line = line.strip()
            if line and not line.startswith("#"):
                key, value = line.split("=", 1)
                data[key] = value
    docs.append({"apiVersion": "v1", "kind": "ConfigMap",
                 "metadata": {"name": generator["name"]}, "data": data})
for d in docs:
    if d["kind"] != "Namespace":
        d["metadata"]["namespace"] = k["namespace"]
print(json.dumps(docs))
"##;

fn render() -> Vec<Value> {
    let base = Path::new(env!("CARGO_MANIFEST_DIR")).join("../deploy/kubernetes");
    let out = std::process::Command::new("python3")
        .args(["-c", RENDER])
        .arg(&base)
        .output()
        .expect("python3 with PyYAML (make test installs it)");
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    serde_json::from_slice(&out.stdout).unwrap()
}

/// Every setting the services know, as ERIOP_* names (.env.example lists exactly those: a
/// unit test of eriop-nats holds it to the Settings type).
fn known_settings() -> BTreeSet<String> {
    let example =
        std::fs::read_to_string(Path::new(env!("CARGO_MANIFEST_DIR")).join("../.env.example"))
            .unwrap();
    let mut known: BTreeSet<String> = example
        .lines()
        .map(|l| l.trim_start_matches("# "))
        .filter_map(|l| l.split_once('=').map(|(k, _)| k))
        .filter(|k| k.starts_with("ERIOP_") && !k.contains(' '))
        .map(str::to_owned)
        .collect();
    for secret in eriop_nats::config::SECRET_SETTINGS {
        known.insert(format!("ERIOP_{}_FILE", secret.to_uppercase()));
    }
    known
}

fn port_of(address: &str) -> u64 {
    address.rsplit(':').next().unwrap().parse().unwrap()
}

#[test]
fn the_manifests_render_and_match_the_services_ports_probes_and_settings() {
    let docs = render();
    let find = |kind: &str, name: &str| -> &Value {
        docs.iter()
            .find(|d| d["kind"] == kind && d["metadata"]["name"] == name)
            .unwrap_or_else(|| panic!("{kind} {name} in the base"))
    };
    for d in &docs {
        if d["kind"] != "Namespace" {
            assert_eq!(
                d["metadata"]["namespace"], "eriop",
                "{}",
                d["metadata"]["name"]
            );
        }
    }
    let config = &find("ConfigMap", "eriop-config")["data"];
    let known = known_settings();
    let mut named = BTreeSet::new();
    for key in config.as_object().unwrap().keys() {
        named.insert(key.clone());
    }
    // Each service, the setting that says where it listens, and the port its probes use.
    for (kind, name, listen) in [
        ("Deployment", "gateway", "ERIOP_HTTP_ADDR"),
        ("Deployment", "projections", "ERIOP_PROJECTIONS_OPS_ADDR"),
        ("StatefulSet", "bridge", "ERIOP_BRIDGE_OPS_ADDR"),
    ] {
        let workload = find(kind, name);
        assert!(
            workload["spec"]["replicas"].as_u64().unwrap() >= 2,
            "{name} replicas"
        );
        let pod = &workload["spec"]["template"];
        assert_eq!(pod["metadata"]["labels"]["app.kubernetes.io/name"], name);
        let container = &pod["spec"]["containers"][0];
        let port = &container["ports"][0];
        let address = config[listen]
            .as_str()
            .unwrap_or_else(|| panic!("{listen} in the ConfigMap"));
        assert_eq!(
            port["containerPort"].as_u64(),
            Some(port_of(address)),
            "{name}"
        );
        for (probe, path) in [
            ("readinessProbe", "/health/ready"),
            ("livenessProbe", "/health/live"),
        ] {
            let get = &container[probe]["httpGet"];
            assert_eq!(get["path"], path, "{name} {probe}");
            assert_eq!(get["port"], port["name"], "{name} {probe}");
        }
        assert_eq!(
            pod["metadata"]["annotations"]["prometheus.io/port"].as_str(),
            Some(port_of(address).to_string().as_str()),
            "{name} is scraped where it answers /metrics"
        );
        for what in ["requests", "limits"] {
            assert!(
                container["resources"][what]["memory"].is_string(),
                "{name} {what}"
            );
        }
        assert_eq!(
            container["securityContext"]["allowPrivilegeEscalation"],
            false
        );
        assert_eq!(pod["spec"]["securityContext"]["runAsNonRoot"], true);
        for env in container["env"].as_array().into_iter().flatten() {
            named.insert(env["name"].as_str().unwrap().to_owned());
        }
        // Secrets are files from the one secret, mounted where the *_FILE settings point.
        let mount = &container["volumeMounts"][0];
        assert_eq!(mount["mountPath"], "/run/secrets/eriop");
        assert_eq!(
            pod["spec"]["volumes"][0]["secret"]["secretName"],
            "eriop-secrets"
        );
        let service = find("Service", name);
        assert_eq!(
            service["spec"]["ports"][0]["targetPort"], port["name"],
            "{name}"
        );
        let budget = find("PodDisruptionBudget", name);
        assert_eq!(
            budget["spec"]["selector"]["matchLabels"]["app.kubernetes.io/name"],
            name
        );
    }
    for (key, value) in config.as_object().unwrap() {
        if key.ends_with("_FILE") && key != "ERIOP_MQTT_CA_FILE" {
            assert!(
                value.as_str().unwrap().starts_with("/run/secrets/eriop/"),
                "{key} points into the mounted secret"
            );
        }
    }
    let unknown: Vec<_> = named.difference(&known).collect();
    assert!(unknown.is_empty(), "settings no service knows: {unknown:?}");
    // Nothing reaches a pod that a policy does not name.
    let deny = find("NetworkPolicy", "default-deny");
    assert_eq!(deny["spec"]["podSelector"], serde_json::json!({}));
    let migrate = find("Job", "migrate");
    assert_eq!(
        migrate["spec"]["template"]["spec"]["containers"][0]["env"][0]["value"],
        "/run/secrets/eriop/database_owner_url",
        "only the migration holds the owner's URL"
    );
}
