//! `eriop-audit`: see `eriop_gateway::services::export::cli`.

fn main() -> std::process::ExitCode {
    std::process::ExitCode::from(eriop_gateway::services::export::cli::run(
        std::env::args(),
        &mut std::io::stdout(),
        &mut std::io::stderr(),
    ))
}
