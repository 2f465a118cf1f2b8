//! `eriop-panic-probe`: a process started as every ERIOP service starts (JSON logs, then
//! `eriop_nats::exit_on_panic`) whose background task panics. The test
//! `device_trust::a_panic_in_any_task_ends_the_process_with_an_error_line` runs it: the
//! process must end by itself, non-zero, with one error line, instead of going on without
//! its task.

use std::time::Duration;

#[tokio::main]
async fn main() {
    let _ = eriop_nats::logging::init(eriop_nats::config::LogFormat::Json, "info", None);
    eriop_nats::exit_on_panic("eriop-panic-probe");
    let worker = tokio::spawn(async {
        let values: Vec<u8> = Vec::new();
        // An out-of-bounds index: the kind of bug a panic hook exists for.
        values[usize::from(values.is_empty())]
    });
    tokio::time::sleep(Duration::from_secs(20)).await;
    // Reached only if the panic did not end the process (tokio keeps it in the JoinHandle).
    println!("still running: {:?}", worker.await.is_err());
}
