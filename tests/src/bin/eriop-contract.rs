//! `eriop-contract`: the API against its own document (`make test-contract`).

use std::process::{Command, ExitCode};

use clap::Parser;
use eriop_tests::faults::stack::{Nats, Stack};
use eriop_tests::nats_server::NatsServer;
use reqwest::Method;
use serde_json::json;

/// Runs schemathesis against a running gateway, as a new user of the API would: the document
/// it serves (`/api/v1/openapi.json`), every phase (examples, coverage, fuzzing, stateful),
/// every check, with the tokens of a platform administrator, an agency administrator, an
/// operator, a viewer, and none. Exits 1 on any failure.
///
/// Starts its own deployment on loopback (as make test-faults does: PostgreSQL cluster,
/// nats-server, Mosquitto, gateway, projections, bridge), so nothing it creates or breaks
/// touches another run. Needs `schemathesis` on PATH (make test-contract installs it).
#[derive(Parser)]
#[command(version, about, long_about)]
struct Cli {
    /// Examples per operation and phase.
    #[arg(long, default_value_t = 30)]
    max_examples: u32,
    /// Only these roles (platform-admin, agency-admin, operator, viewer, anonymous).
    #[arg(long, value_delimiter = ',')]
    roles: Vec<String>,
    /// Print the stack's address and tokens and wait (to run schemathesis by hand).
    #[arg(long)]
    serve: bool,
}

/// Operations a token's run leaves out, and why: they end the very session the run uses
/// (its token would be refused from then on, and every later answer would be a 401). The
/// tests of auth.rs cover them.
const ENDING_THE_SESSION: [&str; 2] = ["/api/v1/auth/logout", "/api/v1/auth/password"];

async fn user_token(stack: &Stack, role: &str, password: &str) -> String {
    let email = format!("{role}.{}@eriop.test", stack.prefix);
    let user = json!({"email": email, "display_name": format!("Contract {role}"), "password": password, "roles": [role]});
    stack.call(Method::POST, "/users", Some(user), "id").await;
    stack.login(&email, password).await
}

#[tokio::main]
async fn main() -> ExitCode {
    let cli = Cli::parse();
    // Stopped (Ctrl-C, SIGTERM): the deployment is dropped, and every process it started.
    tokio::select! {
        code = run(cli) => code,
        () = eriop_nats::shutdown_signal() => {
            eprintln!("contract: stopped; stopping what it started");
            ExitCode::FAILURE
        }
    }
}

async fn run(cli: Cli) -> ExitCode {
    eriop_nats::install_crypto_provider();
    eprintln!("contract: starting a deployment on loopback");
    let stack = Stack::start(Nats::Single(NatsServer::start().await), 1).await;
    let password = format!("correct horse {} staple", stack.prefix);
    // Something to find: a class, a registry and a device of the administrator's agency.
    let lights = stack.register_lights(2).await;
    // Least powerful first: a run may deactivate users it can see (the next role's too).
    let mut tokens = vec![("anonymous".to_owned(), None)];
    for role in ["viewer", "operator", "agency-admin"] {
        tokens.push((
            role.to_owned(),
            Some(user_token(&stack, role, &password).await),
        ));
    }
    tokens.push(("platform-admin".to_owned(), Some(stack.token.clone())));
    if !cli.roles.is_empty() {
        tokens.retain(|(role, _)| cli.roles.contains(role));
    }
    let schema = format!("{}/api/v1/openapi.json", stack.api);
    if cli.serve {
        println!(
            "schema: {schema}\nurl: {}\ndevice: {}",
            stack.api, lights[0].1
        );
        for (role, token) in &tokens {
            println!("{role}: {}", token.as_deref().unwrap_or("-"));
        }
        std::future::pending::<()>().await;
    }
    let mut failed = Vec::new();
    for (role, token) in &tokens {
        eprintln!("contract: schemathesis as {role}");
        let mut command = Command::new("schemathesis");
        command
            .arg("--config-file")
            .arg(concat!(
                env!("CARGO_MANIFEST_DIR"),
                "/contract/schemathesis.toml"
            ))
            .arg("run")
            .arg(&schema)
            .args(["--url", &stack.api])
            .args(["--checks", "all"])
            .args(["--phases", "examples,coverage,fuzzing,stateful"])
            .args(["--max-examples", &cli.max_examples.to_string()])
            .args(["--seed", "1"])
            .args(["--no-color", "--suppress-health-check", "all"]);
        for path in ENDING_THE_SESSION {
            command.args(["--exclude-path", path]);
        }
        if let Some(token) = token {
            command.args(["--header", &format!("Authorization: Bearer {token}")]);
        }
        let status = command.status();
        match status {
            Ok(s) if s.success() => eprintln!("contract: {role}: no failure"),
            Ok(s) => failed.push(format!("{role} ({s})")),
            Err(e) => {
                eprintln!("contract: cannot run schemathesis ({e}): pip install schemathesis");
                return ExitCode::FAILURE;
            }
        }
    }
    if failed.is_empty() {
        println!(
            "contract: schemathesis found no failure for {} roles",
            tokens.len()
        );
        ExitCode::SUCCESS
    } else {
        println!("contract: schemathesis failures as {}", failed.join(", "));
        ExitCode::FAILURE
    }
}
