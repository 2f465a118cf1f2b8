// sqlx::migrate! embeds the files of sql/ at compile time: rebuild when one is added.
fn main() {
    println!("cargo:rerun-if-changed=sql");
}
