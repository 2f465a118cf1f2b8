//! End-to-end tests: one binary, each test with its own database and NATS prefix.

mod agencies;
mod audit;
mod auth;
mod bad_input;
mod command_path;
mod deployment;
mod device_trust;
mod devices;
mod edge;
mod fundamentum_sdk;
mod health;
mod isolation;
mod logs;
mod metrics;
mod migrations;
mod openapi;
mod outage;
mod rate_limits;
mod rebuild;
mod relay;
mod roles;
mod run_script;
mod streams;
mod suspension;
mod talq;
mod telemetry;
