//! The deployment's own configuration files, started as shipped and tried: least privilege
//! on NATS (one user per service; the bridge, which faces devices, cannot write `EVENTS` or
//! `COMMANDS`; an auditor reads `EVENTS` and nothing else).

use std::path::Path;
use std::time::Duration;

use async_nats::jetstream;
use eriop_nats::{Stream, Topology};
use eriop_tests::NatsServer;

const USERS: [(&str, &str, &str); 4] = [
    ("gateway", "NATS_GATEWAY_PASSWORD", "gateway-secret"),
    (
        "projections",
        "NATS_PROJECTIONS_PASSWORD",
        "projections-secret",
    ),
    ("bridge", "NATS_BRIDGE_PASSWORD", "bridge-secret"),
    ("auditor", "NATS_AUDITOR_PASSWORD", "auditor-secret"),
];

async fn connect(server: &NatsServer, user: &str, password: &str) -> jetstream::Context {
    // The auditor gets its replies on its own inbox prefix, as eriop-audit does.
    let inbox = match user {
        "auditor" => eriop_gateway::services::audit_cli::INBOX_PREFIX,
        _ => "_INBOX",
    };
    let client = async_nats::ConnectOptions::with_user_and_password(user.into(), password.into())
        .custom_inbox_prefix(inbox)
        .connect(server.url())
        .await
        .unwrap_or_else(|e| panic!("{user} connects: {e}"));
    eriop_nats::connect::jetstream(client, Duration::from_secs(2))
}

/// A connection as `user`, and the errors the server sends it (a permissions violation is
/// one: the server refuses a subject asynchronously).
async fn with_server_errors(
    server: &NatsServer,
    user: &str,
    password: &str,
) -> (
    async_nats::Client,
    tokio::sync::mpsc::UnboundedReceiver<String>,
) {
    let (errors, received) = tokio::sync::mpsc::unbounded_channel();
    let client = async_nats::ConnectOptions::with_user_and_password(user.into(), password.into())
        .event_callback(move |event| {
            let errors = errors.clone();
            async move {
                if let async_nats::Event::ServerError(e) = event {
                    let _ = errors.send(e.to_string());
                }
            }
        })
        .connect(server.url())
        .await
        .unwrap();
    (client, received)
}

/// Publishes to `subject` and waits for JetStream's ack: whether the user may write there.
async fn can_publish(js: &jetstream::Context, subject: String) -> bool {
    match js.publish(subject, "{}".into()).await {
        Ok(ack) => ack.await.is_ok(),
        Err(_) => false,
    }
}

#[tokio::test]
async fn each_service_has_its_own_nats_user_and_the_bridge_cannot_write_events() {
    eriop_tests::init();
    let config = Path::new(env!("CARGO_MANIFEST_DIR")).join("../deploy/nats/nats-server.conf");
    let env: Vec<(&str, &str)> = USERS.iter().map(|(_, var, pw)| (*var, *pw)).collect();
    let server = NatsServer::start_with(config, &env).await;
    // The deployment's topology: no prefix.
    let topology = Topology::new("");
    let gateway = connect(&server, "gateway", "gateway-secret").await;
    eriop_nats::streams::ensure_streams(&gateway, &topology)
        .await
        .expect("the gateway creates the streams, as at start-up");
    assert!(can_publish(&gateway, topology.event_subject("agency", "a1")).await);
    assert!(can_publish(&gateway, topology.command_subject("a1", "d1")).await);

    let bridge = connect(&server, "bridge", "bridge-secret").await;
    eriop_nats::streams::ensure_streams(&bridge, &topology)
        .await
        .expect("the bridge ensures the streams too");
    assert!(can_publish(&bridge, topology.telemetry_subject("a1")).await);
    assert!(can_publish(&bridge, topology.device_subject("a1", "d1", "activity")).await);
    assert!(can_publish(&bridge, topology.dlq_subject("bridge")).await);
    assert!(
        !can_publish(&bridge, topology.event_subject("agency", "a1")).await,
        "the bridge wrote EVENTS"
    );
    assert!(
        !can_publish(&bridge, topology.command_subject("a1", "d1")).await,
        "the bridge wrote COMMANDS"
    );

    let projections = connect(&server, "projections", "projections-secret").await;
    assert!(can_publish(&projections, topology.dlq_subject("projections.x")).await);
    assert!(!can_publish(&projections, topology.event_subject("agency", "a1")).await);

    // Progress hints: the projections say what they committed, the gateway hears it; the
    // bridge, which faces devices, cannot say it (a forged hint would only cost a look, but
    // it has no business there).
    let hint = topology.projected_subject("agency", "0192a000-0000-7000-8000-000000000001");
    let mut heard = gateway
        .client()
        .subscribe(topology.projected_all())
        .await
        .unwrap();
    // A round trip on the gateway's connection: the server has its subscription (a flush
    // only sends it).
    gateway.query_account().await.unwrap();
    projections
        .client()
        .publish(hint.clone(), "1".into())
        .await
        .unwrap();
    projections.client().flush().await.unwrap();
    let said = tokio::time::timeout(Duration::from_secs(5), futures::StreamExt::next(&mut heard))
        .await
        .expect("the gateway hears the projections' hint")
        .unwrap();
    assert_eq!(
        (said.subject.as_str(), &said.payload[..]),
        (hint.as_str(), &b"1"[..])
    );
    // A gateway's stored signal reaches the relay, in whichever gateway it runs.
    let mut relay = gateway
        .client()
        .subscribe(topology.stored_subject())
        .await
        .unwrap();
    gateway.query_account().await.unwrap();
    gateway
        .client()
        .publish(topology.stored_subject(), "".into())
        .await
        .unwrap();
    tokio::time::timeout(Duration::from_secs(5), futures::StreamExt::next(&mut relay))
        .await
        .expect("the relay hears a gateway's stored signal")
        .unwrap();
    let (forger, mut refused) = with_server_errors(&server, "bridge", "bridge-secret").await;
    for subject in [hint.clone(), topology.stored_subject()] {
        forger.publish(subject.clone(), "9".into()).await.unwrap();
        forger.flush().await.unwrap();
        let refusal = tokio::time::timeout(Duration::from_secs(5), refused.recv())
            .await
            .expect("the server refuses the bridge's publish")
            .unwrap();
        assert!(
            refusal.to_lowercase().contains("permissions violation") && refusal.contains(&subject),
            "{refusal}"
        );
    }

    // An auditor reads EVENTS, and nothing else; writes nothing.
    let auditor = connect(&server, "auditor", "auditor-secret").await;
    let events = auditor
        .get_stream(topology.stream_name(Stream::Events))
        .await
        .expect("an auditor sees EVENTS");
    assert!(events.get_raw_message(1).await.is_ok());
    assert!(auditor
        .get_stream(topology.stream_name(Stream::Telemetry))
        .await
        .is_err());
    assert!(!can_publish(&auditor, topology.event_subject("agency", "a1")).await);
    // ... not even what other services receive on their inboxes (pull consumers' messages).
    let (snooper, mut refused) = with_server_errors(&server, "auditor", "auditor-secret").await;
    let _sniff = snooper.subscribe("_INBOX.>").await.unwrap();
    let refusal = tokio::time::timeout(Duration::from_secs(5), refused.recv())
        .await
        .expect("the server refuses the auditor's _INBOX.> subscription")
        .unwrap();
    assert!(
        refusal.to_lowercase().contains("permissions violation"),
        "{refusal}"
    );
    // eriop-audit, as the auditor (its own inbox prefix), replays EVENTS.
    let password = std::env::temp_dir().join(format!("eriop-auditor-{}", std::process::id()));
    std::fs::write(&password, "auditor-secret\n").unwrap();
    let url = server.url();
    let args = [
        "eriop-audit",
        "replay",
        "--nats-url",
        url.as_str(),
        "--user",
        "auditor",
        "--password-file",
        password.to_str().unwrap(),
    ]
    .map(str::to_owned);
    let (mut out, mut err) = (Vec::new(), Vec::new());
    let code = eriop_gateway::services::audit_cli::run(args, &mut out, &mut err).await;
    std::fs::remove_file(&password).unwrap();
    let out = String::from_utf8(out).unwrap();
    assert_eq!(code, 0, "{}", String::from_utf8_lossy(&err));
    assert!(
        out.lines().count() >= 1 && out.contains(&topology.event_subject("agency", "a1")),
        "{out}"
    );

    // A wrong password gets no connection.
    let refused =
        async_nats::ConnectOptions::with_user_and_password("bridge".into(), "guess".into())
            .connection_timeout(Duration::from_secs(2))
            .connect(server.url())
            .await;
    assert!(refused.is_err(), "a wrong password connected");
}

/// docker-compose.yml as a document (no Docker engine here): which network each service is
/// on, which credentials it gets, and that none has more than it needs.
#[test]
fn the_compose_file_keeps_each_service_to_what_it_needs() {
    let path = Path::new(env!("CARGO_MANIFEST_DIR")).join("../docker-compose.yml");
    let out = std::process::Command::new("python3")
        .args([
            "-c",
            "import json, sys, yaml; print(json.dumps(yaml.safe_load(open(sys.argv[1]))))",
        ])
        .arg(&path)
        .output()
        .expect("python3 with PyYAML (make test installs it)");
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let compose: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    let services = compose["services"].as_object().unwrap();
    let networks = |name: &str| -> Vec<String> {
        services[name]["networks"]
            .as_array()
            .unwrap_or_else(|| panic!("{name} names its networks"))
            .iter()
            .map(|n| n.as_str().unwrap().to_owned())
            .collect()
    };
    assert_eq!(compose["networks"]["internal"]["internal"], true);
    for data in ["timescaledb", "redis", "nats"] {
        assert_eq!(networks(data), ["internal"], "{data} is internal only");
    }
    assert_eq!(
        networks("nginx"),
        ["edge"],
        "the edge reaches the gateway only"
    );
    assert!(!networks("gateway").is_empty() && networks("gateway").contains(&"edge".to_owned()));
    for service in ["projections", "bridge", "migrate"] {
        assert!(!networks(service).contains(&"edge".to_owned()), "{service}");
    }
    let env = |name: &str, var: &str| {
        services[name]["environment"][var]
            .as_str()
            .map(str::to_owned)
    };
    let secrets = |name: &str| -> Vec<String> {
        services[name]["secrets"]
            .as_array()
            .map(|a| a.iter().map(|s| s.as_str().unwrap().to_owned()).collect())
            .unwrap_or_default()
    };
    // Each service its own NATS user; only migrate holds the database owner's URL.
    for (service, user) in [
        ("gateway", "gateway"),
        ("projections", "projections"),
        ("bridge", "bridge"),
    ] {
        let secret = format!("nats_url_{user}");
        assert_eq!(
            env(service, "ERIOP_NATS_URL_FILE"),
            Some(format!("/run/secrets/{secret}"))
        );
        assert!(secrets(service).contains(&secret), "{service}");
        assert!(
            !secrets(service).contains(&"database_owner_url".to_owned()),
            "{service}"
        );
        assert_eq!(
            env(service, "ERIOP_DATABASE_URL_FILE").as_deref(),
            Some("/run/secrets/database_url")
        );
        assert_eq!(
            env(service, "ERIOP_REDIS_URL_FILE").as_deref(),
            Some("/run/secrets/redis_url")
        );
    }
    assert_eq!(
        env("migrate", "ERIOP_DATABASE_URL_FILE").as_deref(),
        Some("/run/secrets/database_owner_url")
    );
    let redis = services["redis"]["command"].to_string();
    assert!(
        redis.contains("--requirepass"),
        "Redis requires a password: {redis}"
    );
    let nats = services["nats"]["command"].to_string();
    assert!(nats.contains("/etc/nats/nats-server.conf"));
    assert!(services["nats"]["volumes"]
        .to_string()
        .contains("./deploy/nats/nats-server.conf"));
    // Every secret a service names is declared, from a file under ./secrets or the certs.
    let declared = compose["secrets"].as_object().unwrap();
    for (name, service) in services {
        for secret in service["secrets"].as_array().into_iter().flatten() {
            let secret = secret.as_str().unwrap();
            assert!(
                declared.contains_key(secret),
                "{name} names undeclared secret {secret}"
            );
        }
    }
    // The database role the services log in as is made by the database's first start.
    let init = std::fs::read_to_string(
        Path::new(env!("CARGO_MANIFEST_DIR")).join("../deploy/timescaledb/10-eriop-roles.sh"),
    )
    .unwrap();
    assert!(init.contains("CREATE ROLE eriop_service LOGIN NOSUPERUSER NOBYPASSRLS"));
    assert!(init.contains("IN ROLE eriop_app"));
}

/// A YAML file of the repository, as JSON (PyYAML, as above).
fn yaml(relative: &str) -> serde_json::Value {
    let path = Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("..")
        .join(relative);
    let out = std::process::Command::new("python3")
        .args([
            "-c",
            "import json, sys, yaml; print(json.dumps(yaml.safe_load(open(sys.argv[1])), default=str))",
        ])
        .arg(&path)
        .output()
        .expect("python3 with PyYAML (make test installs it)");
    assert!(
        out.status.success(),
        "{relative}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    serde_json::from_slice(&out.stdout).unwrap()
}

#[test]
fn the_observability_profile_scrapes_where_the_services_listen_and_ships_their_logs() {
    let compose = yaml("docker-compose.yml");
    let services = &compose["services"];
    for name in ["prometheus", "loki", "vector", "grafana"] {
        assert_eq!(services[name]["profiles"][0], "observability", "{name}");
    }
    // Prometheus scrapes each service where it listens.
    let prometheus = yaml("deploy/prometheus/prometheus.yml");
    let target = |job: &str| -> String {
        prometheus["scrape_configs"]
            .as_array()
            .unwrap()
            .iter()
            .find(|c| c["job_name"] == job)
            .unwrap_or_else(|| panic!("job {job}"))["static_configs"][0]["targets"][0]
            .as_str()
            .unwrap()
            .to_owned()
    };
    let port = |address: &str| address.rsplit(':').next().unwrap().to_owned();
    let gateway_addr = services["gateway"]["environment"]["ERIOP_HTTP_ADDR"]
        .as_str()
        .unwrap();
    assert_eq!(
        target("eriop-gateway"),
        format!("gateway:{}", port(gateway_addr))
    );
    let defaults = eriop_nats::Settings::development().unwrap();
    assert_eq!(
        target("eriop-bridge"),
        format!("bridge:{}", port(&defaults.bridge_ops_addr))
    );
    assert_eq!(
        target("eriop-projections"),
        format!("projections:{}", port(&defaults.projections_ops_addr))
    );
    let mounts = services["prometheus"]["volumes"].to_string();
    assert!(mounts.contains("./deploy/prometheus/alerts.yml:/etc/prometheus/alerts.yml:ro"));
    assert_eq!(prometheus["rule_files"][0], "/etc/prometheus/alerts.yml");
    // Vector reads Docker's logs (read only) and writes to Loki where Loki listens.
    let vector = yaml("deploy/vector/vector.yaml");
    let loki = yaml("deploy/loki/loki.yaml");
    assert_eq!(
        vector["sinks"]["loki"]["endpoint"],
        format!("http://loki:{}", loki["server"]["http_listen_port"])
    );
    assert!(services["vector"]["volumes"]
        .to_string()
        .contains("/var/run/docker.sock:/var/run/docker.sock:ro"));
    let condition = vector["transforms"]["eriop_services"]["condition"]
        .as_str()
        .unwrap();
    for service in ["gateway", "projections", "bridge"] {
        assert!(
            condition.contains(&format!("\"{service}\"")),
            "{service} shipped"
        );
    }
    // The services' health checks use their own ports.
    for (service, addr) in [
        ("bridge", &defaults.bridge_ops_addr),
        ("projections", &defaults.projections_ops_addr),
    ] {
        let check = services[service]["healthcheck"]["test"].to_string();
        assert!(
            check.contains(&format!("127.0.0.1:{}/health/live", port(addr))),
            "{service}: {check}"
        );
    }
}
