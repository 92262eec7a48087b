// `sqlx::migrate!` embeds migrations/ at compile time; rebuild when it changes
// (sqlx does not track the folder by itself).
fn main() {
    println!("cargo:rerun-if-changed=../../migrations");
}
