//! `eriop-audit`: see `eriop_gateway::services::audit_cli`.

#[tokio::main(flavor = "current_thread")]
async fn main() -> std::process::ExitCode {
    std::process::ExitCode::from(
        eriop_gateway::services::audit_cli::run(
            std::env::args(),
            &mut std::io::stdout(),
            &mut std::io::stderr(),
        )
        .await,
    )
}
