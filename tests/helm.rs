//! The Helm chart through a real `helm` binary (scripts/helm-deps.sh
//! installs it into .tools/): lint, render with defaults and with every
//! optional feature, schema rejections, offline validation of the built-in
//! kinds, and the security posture and RBAC read from the rendered YAML.

use std::{path::PathBuf, process::Command};

use serde::Deserialize as _;
use serde_json::Value;

const ROOT: &str = env!("CARGO_MANIFEST_DIR");

fn tool(env: &str, rel: &str) -> PathBuf {
    let p = std::env::var(env).map_or_else(|_| PathBuf::from(ROOT).join(rel), PathBuf::from);
    assert!(
        p.exists(),
        "{} is missing: run scripts/test.sh (or scripts/helm-deps.sh) first",
        p.display()
    );
    p
}

fn helm(args: &[&str]) -> std::process::Output {
    Command::new(tool("SSO_HELM", ".tools/bin/helm"))
        .args(args)
        .current_dir(ROOT)
        .output()
        .unwrap()
}

const CHART: &str = "charts/sso-operator";
const ALL: &str = "charts/sso-operator/ci/all-features-values.yaml";

fn render(extra: &[&str]) -> (String, Vec<Value>) {
    let mut args = vec!["template", "rel", CHART, "--namespace", "sso"];
    args.extend_from_slice(extra);
    let out = helm(&args);
    assert!(
        out.status.success(),
        "helm template failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    let text = String::from_utf8(out.stdout).unwrap();
    let docs = serde_yaml::Deserializer::from_str(&text)
        .filter_map(|d| {
            let v = Value::deserialize(d).expect("rendered YAML parses");
            (!v.is_null()).then_some(v)
        })
        .collect();
    (text, docs)
}

fn defaults() -> (String, Vec<Value>) {
    render(&["--set", "publicURL=https://sso.example.com"])
}

fn all_features() -> (String, Vec<Value>) {
    render(&["-f", ALL])
}

fn of_kind<'a>(docs: &'a [Value], kind: &str) -> Vec<&'a Value> {
    docs.iter().filter(|d| d["kind"] == kind).collect()
}

fn named<'a>(docs: &'a [Value], kind: &str, name: &str) -> &'a Value {
    docs.iter()
        .find(|d| d["kind"] == kind && d["metadata"]["name"] == name)
        .unwrap_or_else(|| panic!("no {kind} {name}"))
}

#[test]
fn lint_strict_with_defaults_and_with_every_feature() {
    for extra in [
        vec!["--set", "publicURL=https://sso.example.com"],
        vec!["-f", ALL],
    ] {
        let mut args = vec!["lint", "--strict", CHART];
        args.extend(extra.iter().copied());
        let out = helm(&args);
        assert!(
            out.status.success(),
            "helm lint {extra:?}: {}{}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        );
    }
}

#[test]
fn the_schema_rejects_typos_and_a_missing_public_url() {
    // `helm template` with a public URL and one more value: its error text.
    let refused = |value: &str| {
        let out = helm(&[
            "template",
            "rel",
            CHART,
            "--set",
            "publicURL=https://x.example.com",
            "--set",
            value,
        ]);
        assert!(!out.status.success(), "{value} is refused");
        String::from_utf8_lossy(&out.stderr).into_owned()
    };
    assert!(
        refused("brokr.replicas=3").contains("brokr"),
        "names the bad key"
    );
    assert!(refused("controller.replicass=3").contains("replicass"));
    refused("broker.service.type=Bogus"); // enums are checked
    assert!(refused("broker.defaultPolicy=no-slash").contains("defaultPolicy"));
    // Both ways of answering /oauth/auth at once: refused, named.
    let out = helm(&[
        "template",
        "rel",
        CHART,
        "--set",
        "publicURL=https://x.example.com",
        "--set",
        "broker.defaultPolicy=team-a/app",
        "--set",
        "broker.anyProviderAuth=true",
    ]);
    assert!(!out.status.success());
    assert!(
        String::from_utf8_lossy(&out.stderr)
            .contains("set at most one of broker.defaultPolicy and broker.anyProviderAuth")
    );
    let out = helm(&["template", "rel", CHART]);
    assert!(!out.status.success());
    assert!(String::from_utf8_lossy(&out.stderr).contains("publicURL"));
}

#[test]
fn renders_every_optional_feature_only_when_asked() {
    let (_, d) = defaults();
    for kind in [
        "Ingress",
        "ServiceMonitor",
        "NetworkPolicy",
        "PodDisruptionBudget",
    ] {
        assert!(of_kind(&d, kind).is_empty(), "{kind} is off by default");
    }
    let (_, a) = all_features();
    assert_eq!(of_kind(&a, "Ingress").len(), 1);
    assert_eq!(of_kind(&a, "ServiceMonitor").len(), 2);
    assert_eq!(of_kind(&a, "NetworkPolicy").len(), 2);
    let np = named(&a, "NetworkPolicy", "rel-broker");
    assert_eq!(
        np["spec"]["ingress"][0]["from"][0]["namespaceSelector"]["matchLabels"]["kubernetes.io/metadata.name"],
        "ingress-nginx",
        "the broker reachable from the ingress controllers only"
    );
    // Egress: DNS, the API server's addresses only, and the IdP rules as
    // given; no rule open to every address on 443.
    for name in ["rel-broker", "rel-controller"] {
        let egress = named(&a, "NetworkPolicy", name)["spec"]["egress"]
            .as_array()
            .unwrap()
            .clone();
        assert_eq!(egress.len(), 3, "{name}: {egress:?}");
        assert_eq!(
            egress[1]["to"][0]["ipBlock"]["cidr"], "10.0.0.1/32",
            "{name}"
        );
        assert_eq!(
            egress[2]["ports"][1]["port"], 8443,
            "{name}: an IdP on another port"
        );
        assert!(
            egress
                .iter()
                .all(|r| r.get("to").is_some() || r["ports"][0]["port"] == 53),
            "{name}: only DNS goes anywhere: {egress:?}"
        );
        let ingress = named(&a, "NetworkPolicy", name)["spec"]["ingress"].to_string();
        assert!(ingress.contains("monitoring"), "{name}: {ingress}");
    }
    // The default IdP rule: https to public addresses.
    let (_, np_default) = render(&[
        "--set",
        "publicURL=https://sso.example.com",
        "--set",
        "networkPolicy.enabled=true",
        "--set",
        "networkPolicy.apiServerCIDRs={10.0.0.1/32}",
    ]);
    let egress = &named(&np_default, "NetworkPolicy", "rel-broker")["spec"]["egress"];
    assert_eq!(egress[2]["ports"][0]["port"], 443);
    assert!(
        egress[2]["to"][0]["ipBlock"]["except"]
            .as_array()
            .unwrap()
            .contains(&"10.0.0.0/8".into())
    );
    let ingress = &named(&np_default, "NetworkPolicy", "rel-broker")["spec"]["ingress"];
    assert_eq!(
        ingress[1]["from"][0]["namespaceSelector"]["matchLabels"]["kubernetes.io/metadata.name"],
        "monitoring",
        "metrics from the monitoring namespace, not from every namespace"
    );
    // Without the API server's addresses the chart says what to set.
    let out = helm(&[
        "template",
        "rel",
        CHART,
        "--set",
        "publicURL=https://sso.example.com",
        "--set",
        "networkPolicy.enabled=true",
    ]);
    assert!(!out.status.success());
    assert!(String::from_utf8_lossy(&out.stderr).contains("networkPolicy.apiServerCIDRs"));
    assert_eq!(of_kind(&a, "PodDisruptionBudget").len(), 2);
    let ingress = of_kind(&a, "Ingress")[0];
    assert_eq!(ingress["spec"]["rules"][0]["host"], "sso.example.com");
    assert_eq!(ingress["spec"]["tls"][0]["secretName"], "sso-tls");
    // Flags follow the values.
    let broker = named(&a, "Deployment", "rel-broker");
    let args: Vec<&str> = broker["spec"]["template"]["spec"]["containers"][0]["args"]
        .as_array()
        .unwrap()
        .iter()
        .map(|v| v.as_str().unwrap())
        .collect();
    assert!(
        args.contains(&"--allowed-redirect-domains=.example.com"),
        "{args:?}"
    );
    assert!(args.contains(&"--cookie-domain=.example.com"));
    assert!(args.contains(&"--config-secret=rel-broker-config"));
    assert!(args.contains(&"--default-policy=team-a/app"), "{args:?}");
    assert!(!args.iter().any(|a| a.starts_with("--any-provider-auth")));
    // By default /oauth/auth admits nobody: no flag loosens it.
    let plain = named(&d, "Deployment", "rel-broker").to_string();
    assert!(!plain.contains("--default-policy") && !plain.contains("--any-provider-auth"));
    let controller = named(&a, "Deployment", "rel-controller");
    let cargs = controller["spec"]["template"]["spec"]["containers"][0]["args"].to_string();
    assert!(cargs.contains("--leader-election") && cargs.contains("--lease-name=rel-controller"));
    assert!(cargs.contains("--watch-namespace=team-a"));
    assert!(cargs.contains("--auth-url-base=https://sso-internal.example.com/oauth/auth"));
    // Provider egress: the allowed private ranges reach both processes.
    assert!(
        cargs.contains("--allow-provider-cidrs=10.96.0.0/12"),
        "{cargs}"
    );
    assert!(
        args.contains(&"--allow-provider-cidrs=10.96.0.0/12"),
        "{args:?}"
    );
    assert!(
        !plain.contains("--allow-provider-cidrs"),
        "public only by default"
    );
    assert!(
        cargs.contains("--max-providers-per-namespace=50"),
        "{cargs}"
    );
    let plain_controller = named(&d, "Deployment", "rel-controller").to_string();
    assert!(
        !plain_controller.contains("--max-providers-per-namespace"),
        "no limit by default"
    );
}

#[test]
fn the_crds_in_the_chart_are_the_generated_ones() {
    let (_, d) = defaults();
    let rendered = of_kind(&d, "CustomResourceDefinition");
    assert_eq!(rendered.len(), 2, "IdentityProvider and AccessPolicy");
    for (file, crd) in ["identityprovider.yaml", "accesspolicy.yaml"]
        .into_iter()
        .zip(rendered)
    {
        let chart_copy = std::fs::read_to_string(format!("{ROOT}/{CHART}/files/{file}")).unwrap();
        let generated = std::fs::read_to_string(format!("{ROOT}/crds/{file}")).unwrap();
        assert!(
            chart_copy == generated,
            "charts/sso-operator/files/{file} differs from crds/: cp crds/{file} charts/sso-operator/files/"
        );
        assert_eq!(
            crd["metadata"]["annotations"]["helm.sh/resource-policy"],
            "keep"
        );
        let from_file: Value = serde_yaml::from_str(&generated).unwrap();
        assert_eq!(crd["spec"], from_file["spec"], "{file} rendered unchanged");
    }
    let (_, no_crd) = render(&[
        "--set",
        "publicURL=https://x.example.com",
        "--set",
        "crds.install=false",
    ]);
    assert!(of_kind(&no_crd, "CustomResourceDefinition").is_empty());
}

#[test]
fn built_in_kinds_validate_offline_for_supported_kubernetes_versions() {
    let validator = tool(
        "SSO_KUBERNETES_VALIDATE",
        ".tools/venv/bin/kubernetes-validate",
    );
    let dir = tempfile::tempdir().unwrap();
    let (all, _) = all_features();
    let (def, _) = defaults();
    for (name, text) in [("all.yaml", all), ("defaults.yaml", def)] {
        let path = dir.path().join(name);
        std::fs::write(&path, text).unwrap();
        for version in ["1.30.0", "1.33.0"] {
            let out = Command::new(&validator)
                .args(["--strict", "--quiet", "-k", version])
                .arg(&path)
                .output()
                .unwrap();
            let stdout = String::from_utf8_lossy(&out.stdout);
            assert!(
                out.status.success(),
                "{name} @ {version}:\n{stdout}{}",
                String::from_utf8_lossy(&out.stderr)
            );
            // Only the ServiceMonitor CRD kind has no built-in schema.
            for line in stdout
                .lines()
                .filter(|l| l.contains("Couldn't find schema"))
            {
                assert!(
                    line.contains("ServiceMonitor"),
                    "unexpected unvalidated kind: {line}"
                );
            }
        }
    }
    // The validator itself fails a broken manifest.
    let bad = dir.path().join("bad.yaml");
    std::fs::write(
        &bad,
        "apiVersion: apps/v1\nkind: Deployment\nmetadata: {name: x}\nspec: {replicas: two}\n",
    )
    .unwrap();
    let out = Command::new(&validator)
        .args(["--strict", "--quiet", "-k", "1.33.0"])
        .arg(&bad)
        .output()
        .unwrap();
    assert!(!out.status.success(), "a wrong type is rejected");
}

/// Every pod and container runs under the restricted profile.
fn security_violations(docs: &[Value]) -> Vec<String> {
    let mut bad = Vec::new();
    for d in of_kind(docs, "Deployment") {
        let name = d["metadata"]["name"].as_str().unwrap_or("?");
        let pod = &d["spec"]["template"]["spec"];
        if pod["securityContext"]["runAsNonRoot"] != true {
            bad.push(format!("{name}: pod runAsNonRoot"));
        }
        if pod["securityContext"]["seccompProfile"]["type"] != "RuntimeDefault" {
            bad.push(format!("{name}: pod seccomp"));
        }
        for c in pod["containers"].as_array().into_iter().flatten() {
            let sc = &c["securityContext"];
            let cname = format!("{name}/{}", c["name"].as_str().unwrap_or("?"));
            if sc["readOnlyRootFilesystem"] != true {
                bad.push(format!("{cname}: readOnlyRootFilesystem"));
            }
            if sc["allowPrivilegeEscalation"] != false {
                bad.push(format!("{cname}: allowPrivilegeEscalation"));
            }
            if sc["capabilities"]["drop"] != serde_json::json!(["ALL"]) {
                bad.push(format!("{cname}: capabilities not dropped"));
            }
            if sc["runAsNonRoot"] != true {
                bad.push(format!("{cname}: runAsNonRoot"));
            }
            for k in ["requests", "limits"] {
                if c["resources"][k]["cpu"].is_null() || c["resources"][k]["memory"].is_null() {
                    bad.push(format!("{cname}: resources.{k}"));
                }
            }
            if c["livenessProbe"].is_null() || c["readinessProbe"].is_null() {
                bad.push(format!("{cname}: probes"));
            }
        }
    }
    bad
}

const WRITE_VERBS: [&str; 6] = [
    "create",
    "update",
    "patch",
    "delete",
    "deletecollection",
    "*",
];

/// RBAC rules that break least privilege.
fn rbac_violations(docs: &[Value]) -> Vec<String> {
    let mut bad = Vec::new();
    for d in docs
        .iter()
        .filter(|d| d["kind"] == "Role" || d["kind"] == "ClusterRole")
    {
        let name = format!(
            "{} {}",
            d["kind"].as_str().unwrap(),
            d["metadata"]["name"].as_str().unwrap_or("?")
        );
        for rule in d["rules"].as_array().into_iter().flatten() {
            let list = |k: &str| -> Vec<String> {
                rule[k]
                    .as_array()
                    .into_iter()
                    .flatten()
                    .filter_map(|v| v.as_str().map(str::to_string))
                    .collect()
            };
            let (verbs, resources, groups, names) = (
                list("verbs"),
                list("resources"),
                list("apiGroups"),
                list("resourceNames"),
            );
            if verbs
                .iter()
                .chain(&resources)
                .chain(&groups)
                .any(|v| v.contains('*'))
            {
                bad.push(format!("{name}: wildcard in {rule}"));
            }
            if resources.iter().any(|r| r == "secrets") {
                let writes = verbs.iter().any(|v| WRITE_VERBS.contains(&v.as_str()));
                if writes && d["kind"] == "ClusterRole" {
                    bad.push(format!("{name}: cluster-wide Secret write"));
                }
                if writes && names.is_empty() {
                    bad.push(format!("{name}: Secret write without resourceNames"));
                }
                if verbs.iter().any(|v| v == "create") {
                    bad.push(format!("{name}: Secret create"));
                }
            }
        }
    }
    bad
}

#[test]
fn the_checkers_catch_a_bad_chart() {
    let bad: Vec<Value> = serde_yaml::from_str::<Value>(
        r#"[
        {"kind": "ClusterRole", "metadata": {"name": "x"}, "rules": [
            {"apiGroups": [""], "resources": ["secrets"], "verbs": ["get", "patch"]},
            {"apiGroups": ["*"], "resources": ["pods"], "verbs": ["get"]}]},
        {"kind": "Deployment", "metadata": {"name": "d"}, "spec": {"template": {"spec": {
            "securityContext": {}, "containers": [{"name": "c", "securityContext": {"readOnlyRootFilesystem": false}}]}}}}
    ]"#,
    )
    .unwrap()
    .as_array()
    .unwrap()
    .clone();
    let r = rbac_violations(&bad);
    assert!(
        r.iter().any(|v| v.contains("cluster-wide Secret write")),
        "{r:?}"
    );
    assert!(r.iter().any(|v| v.contains("wildcard")), "{r:?}");
    let s = security_violations(&bad);
    assert!(
        s.iter().any(|v| v.contains("readOnlyRootFilesystem")),
        "{s:?}"
    );
    assert!(s.iter().any(|v| v.contains("capabilities")), "{s:?}");
    assert!(s.iter().any(|v| v.contains("resources")), "{s:?}");
}

#[test]
fn security_posture_and_least_privilege_rbac() {
    for (label, (_, docs)) in [("defaults", defaults()), ("all features", all_features())] {
        assert_eq!(security_violations(&docs), Vec::<String>::new(), "{label}");
        assert_eq!(rbac_violations(&docs), Vec::<String>::new(), "{label}");
        assert_eq!(of_kind(&docs, "Deployment").len(), 2, "{label}");
    }
    let (_, d) = defaults();
    // The broker reads exactly its two Secrets, by name, and nothing else.
    let broker = named(&d, "Role", "rel-broker");
    let rules = broker["rules"].as_array().unwrap();
    assert_eq!(rules.len(), 1);
    assert_eq!(rules[0]["resources"], serde_json::json!(["secrets"]));
    assert_eq!(
        rules[0]["resourceNames"],
        serde_json::json!(["rel-broker-config", "rel-session-keys"])
    );
    let broker_bound: Vec<&Value> = d
        .iter()
        .filter(|x| {
            (x["kind"] == "RoleBinding" || x["kind"] == "ClusterRoleBinding")
                && x["subjects"][0]["name"] == "rel-broker"
        })
        .collect();
    assert_eq!(
        broker_bound.len(),
        1,
        "the broker has one binding, to its Role"
    );
    // The controller may patch IdentityProvider and AccessPolicy status and
    // hold its Lease.
    let cr = named(&d, "ClusterRole", "rel-controller");
    assert!(
        cr["rules"]
            .as_array()
            .unwrap()
            .iter()
            .any(|r| r["resources"]
                == serde_json::json!(["identityproviders/status", "accesspolicies/status"])
                && r["verbs"].as_array().unwrap().contains(&"patch".into()))
    );
    let role = named(&d, "Role", "rel-controller");
    assert!(
        role["rules"].to_string().contains("rel-controller"),
        "lease by name"
    );
    // With secretNamespaces, no cluster-wide Secret read at all.
    let (_, a) = all_features();
    let cr = named(&a, "ClusterRole", "rel-controller");
    assert!(!cr["rules"].to_string().contains("secrets"));
    assert_eq!(
        of_kind(&a, "Role")
            .iter()
            .filter(|r| r["metadata"]["name"] == "rel-controller-secrets")
            .count(),
        2
    );
    // Session keys: kept across upgrades and uninstall, and never made by
    // the template: two renders (Argo CD renders on every sync, without
    // lookup) give the same Secret, with no keys; the controller fills it
    // and may patch exactly it.
    let keys = named(&d, "Secret", "rel-session-keys");
    assert_eq!(
        keys["metadata"]["annotations"]["helm.sh/resource-policy"],
        "keep"
    );
    assert!(keys["data"].is_null(), "no keys in the template: {keys}");
    let (_, again) = defaults();
    assert_eq!(
        named(&again, "Secret", "rel-session-keys"),
        keys,
        "a render is stable"
    );
    let cargs = named(&d, "Deployment", "rel-controller")["spec"]["template"]["spec"]["containers"]
        [0]["args"]
        .to_string();
    assert!(
        cargs.contains("--session-keys-secret=rel-session-keys"),
        "{cargs}"
    );
    assert!(
        role["rules"][0]["resourceNames"]
            .to_string()
            .contains("rel-session-keys"),
        "{role}"
    );
    let cfg = named(&d, "Secret", "rel-broker-config");
    assert_eq!(
        cfg["metadata"]["annotations"]["helm.sh/resource-policy"],
        "keep"
    );
    assert!(
        cfg["data"].is_null(),
        "created empty; the controller writes it"
    );
    let (_, ext) = render(&[
        "--set",
        "publicURL=https://x.example.com",
        "--set",
        "broker.sessionKeys.existingSecret=my-keys",
    ]);
    assert!(
        of_kind(&ext, "Secret")
            .iter()
            .all(|s| s["metadata"]["name"] != "rel-session-keys")
    );
    assert!(
        named(&ext, "Role", "rel-broker")["rules"][0]["resourceNames"]
            .to_string()
            .contains("my-keys")
    );
    // Brought keys: the controller neither generates nor may patch them.
    let ext_ctl = named(&ext, "Deployment", "rel-controller").to_string();
    assert!(!ext_ctl.contains("--session-keys-secret"));
    assert!(
        !named(&ext, "Role", "rel-controller")
            .to_string()
            .contains("my-keys")
    );
}
