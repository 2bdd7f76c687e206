//! `RUDDER_SKIP_PRIVILEGED=1` compiles the privileged tests as ignored, so a
//! run without root reports them as ignored rather than failing (or passing).
fn main() {
    println!("cargo::rerun-if-env-changed=RUDDER_SKIP_PRIVILEGED");
    if std::env::var_os("RUDDER_SKIP_PRIVILEGED").is_some_and(|v| v == "1") {
        println!("cargo::rustc-cfg=rudder_skip_privileged");
    }
}
