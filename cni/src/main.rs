//! `rudder-cni`, installed as `/opt/cni/bin/rudder`: configuration on
//! stdin, `CNI_*` in the environment, the result or an error JSON on
//! stdout, logs on stderr.

use std::io::Read as _;

use rudder_cni::plugin::{self, Env};

fn main() {
    let mut stdin = Vec::new();
    let env = Env::from_process();
    if let Err(e) = std::io::stdin().read_to_end(&mut stdin) {
        let err = plugin::PluginError::Decode(format!("cannot read stdin: {e}"));
        fail(&err.to_result("1.1.0"));
    }
    let rt = match tokio::runtime::Builder::new_current_thread()
        .enable_io()
        .enable_time()
        .build()
    {
        Ok(rt) => rt,
        Err(e) => {
            let err = plugin::PluginError::Env(format!("cannot start the I/O runtime: {e}"));
            fail(&err.to_result(&plugin::reply_version(&stdin)));
        }
    };
    match rt.block_on(plugin::run(&env, &stdin)) {
        Ok(Some(out)) => println!("{out}"),
        Ok(None) => {}
        Err(e) => fail(&e.to_result(&plugin::reply_version(&stdin))),
    }
}

fn fail(e: &rudder_cni::spec::ErrorResult) -> ! {
    println!("{}", serde_json::to_string(e).expect("serializable"));
    eprintln!("rudder-cni: {}", e.msg);
    std::process::exit(1)
}
