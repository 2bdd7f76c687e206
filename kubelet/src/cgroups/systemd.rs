//! The systemd driver: each tier and pod cgroup is a transient slice that
//! systemd makes when asked over D-Bus (`StartTransientUnit`, or
//! `SetUnitProperties` for one that exists), with the properties
//! libcontainer's systemd manager gives the kubelet's slices: `Wants=` its
//! parent, no default dependencies, cpu, memory and tasks accounting,
//! `CPUShares`/`MemoryLimit` on v1 or `CPUWeight`/`MemoryMax` on v2, and
//! `CPUQuotaPerSecUSec`. As libcontainer does, the same settings are then
//! written into the slice's files too, so that a systemd that does not
//! know a property still ends with them.
//!
//! The connection is the kubelet's: systemd on the system bus (every
//! systemd node has a bus daemon: dbus-daemon on CentOS 7, dbus-broker on
//! RHEL 8 and later). systemd's private socket, which runc falls back to
//! as root, is not used: systemd sends its well-known name as the sender
//! there, which `zbus` (the maintained D-Bus implementation in Rust; this
//! module only names systemd's methods) does not accept. Every call is
//! bounded in time.

use std::{path::Path, time::Duration};

use zbus::{
    Connection, Proxy,
    proxy::CacheProperties,
    zvariant::{OwnedObjectPath, Value},
};

use super::{CPU_PERIOD_US, CgroupError, CgroupName, Resources, fs::Hierarchy, shares_to_weight};

const DEST: &str = "org.freedesktop.systemd1";
const PATH: &str = "/org/freedesktop/systemd1";
const MANAGER: &str = "org.freedesktop.systemd1.Manager";
/// How long a new slice's cgroup may take to appear.
const REALIZE: Duration = Duration::from_secs(10);
/// How long one D-Bus call may take.
const CALL: Duration = Duration::from_secs(30);

/// A connection to systemd's manager, made again after the bus dropped
/// it (a restarted bus daemon), as libcontainer's `dbusConnManager` does.
#[derive(Debug)]
pub struct Systemd {
    proxy: tokio::sync::Mutex<Proxy<'static>>,
    hierarchy: Hierarchy,
}

fn dbus_err(what: &str) -> impl FnOnce(zbus::Error) -> CgroupError + '_ {
    move |e| CgroupError::Systemd(format!("{what}: {e}"))
}

/// Whether systemd is the node's init (`sd_booted`).
pub fn booted() -> bool {
    Path::new("/run/systemd/system").is_dir()
}

impl Systemd {
    /// Connects to systemd on the system bus.
    pub async fn connect() -> Result<Self, CgroupError> {
        if !booted() {
            return Err(CgroupError::NoSystemd);
        }
        Ok(Self {
            proxy: tokio::sync::Mutex::new(Self::manager().await?),
            hierarchy: Hierarchy::detect(),
        })
    }

    async fn manager() -> Result<Proxy<'static>, CgroupError> {
        let conn = tokio::time::timeout(CALL, Connection::system())
            .await
            .map_err(|_| CgroupError::Systemd(format!("the system bus: no answer in {CALL:?}")))?
            .map_err(|e| {
                CgroupError::Systemd(format!(
                    "the system bus (through which the systemd driver asks for slices, as the \
                     kubelet does): {e}"
                ))
            })?;
        let proxy = zbus::proxy::Builder::new(&conn)
            .destination(DEST)
            .and_then(|b| b.path(PATH))
            .and_then(|b| b.interface(MANAGER))
            .map_err(dbus_err("proxy"))?
            .cache_properties(CacheProperties::No)
            .build()
            .await
            .map_err(dbus_err("proxy"))?;
        Ok(proxy)
    }

    /// Makes the slice `name` (or updates it) with `res`, and waits until
    /// its cgroup exists.
    pub async fn ensure_slice(
        &self,
        name: &CgroupName,
        res: &Resources,
    ) -> Result<(), CgroupError> {
        let unit = name.to_systemd_unit();
        let unified = self.hierarchy.unified;
        let started = {
            let mut all = vec![
                ("Description", Value::from(format!("Rudder pods: {unit}"))),
                ("Wants", Value::from(vec![name.parent_unit()])),
                ("DefaultDependencies", Value::from(false)),
                ("MemoryAccounting", Value::from(true)),
                ("CPUAccounting", Value::from(true)),
                ("TasksAccounting", Value::from(true)),
            ];
            all.extend(resource_properties(unified, res));
            let aux: Vec<(&str, Vec<(&str, Value<'_>)>)> = vec![];
            self.call::<OwnedObjectPath>(
                "StartTransientUnit",
                &(unit.as_str(), "replace", all, aux),
            )
            .await
        };
        match started {
            Ok(_) => {}
            Err(zbus::Error::MethodError(e, _, _))
                if e.as_str() == "org.freedesktop.systemd1.UnitExists" =>
            {
                self.call::<()>(
                    "SetUnitProperties",
                    &(unit.as_str(), true, resource_properties(unified, res)),
                )
                .await
                .map_err(dbus_err("SetUnitProperties"))?;
            }
            Err(e) => return Err(dbus_err("StartTransientUnit")(e)),
        }
        let rel = name.to_systemd();
        let deadline = tokio::time::Instant::now() + REALIZE;
        while !self.realized(&rel) {
            if tokio::time::Instant::now() > deadline {
                return Err(CgroupError::Systemd(format!(
                    "{unit}: its cgroup {rel} did not appear within {REALIZE:?}"
                )));
            }
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
        // libcontainer's systemd manager writes the files after too.
        self.hierarchy.ensure(&rel, res)
    }

    /// Whether systemd has made the slice's cgroup (in its own hierarchy
    /// on v1).
    fn realized(&self, rel: &str) -> bool {
        let rel = rel.trim_start_matches('/');
        let root = Path::new("/sys/fs/cgroup");
        if self.hierarchy.unified {
            root.join(rel).is_dir()
        } else {
            root.join("systemd").join(rel).is_dir()
        }
    }

    /// Stops the slice `name` (and whatever is left in it); one that does
    /// not exist is no error.
    pub async fn stop_slice(&self, name: &CgroupName) {
        let unit = name.to_systemd_unit();
        match self
            .call::<OwnedObjectPath>("StopUnit", &(unit.as_str(), "replace"))
            .await
        {
            Ok(_) => {}
            Err(zbus::Error::MethodError(e, _, _))
                if e.as_str() == "org.freedesktop.systemd1.NoSuchUnit" => {}
            Err(e) => tracing::warn!(unit, error = %e, "stopping a pod's slice"),
        }
    }

    async fn call<R>(
        &self,
        method: &'static str,
        body: &(impl serde::Serialize + zbus::zvariant::DynamicType),
    ) -> Result<R, zbus::Error>
    where
        R: for<'d> zbus::zvariant::DynamicDeserialize<'d>,
    {
        let mut proxy = self.proxy.lock().await;
        let first = match tokio::time::timeout(CALL, proxy.call(method, body)).await {
            Ok(r) => r,
            Err(_) => Err(zbus::Error::Failure(format!(
                "{method}: no answer in {CALL:?}"
            ))),
        };
        // systemd answered (even with an error), or the bus is not back.
        let lost = matches!(&first, Err(zbus::Error::InputOutput(_)));
        if !lost {
            return first;
        }
        match Self::manager().await {
            Ok(p) => *proxy = p,
            Err(_) => return first,
        }
        tracing::info!("connected to systemd again after the bus dropped the connection");
        match tokio::time::timeout(CALL, proxy.call(method, body)).await {
            Ok(r) => r,
            Err(_) => Err(zbus::Error::Failure(format!(
                "{method}: no answer in {CALL:?}"
            ))),
        }
    }
}

/// systemd's name for "no limit" in its `t` properties.
const INFINITY: u64 = u64::MAX;

/// The resource properties of a slice, as libcontainer's systemd manager
/// derives them (its rounding of the quota up to 10 ms included).
pub fn resource_properties(unified: bool, res: &Resources) -> Vec<(&'static str, Value<'static>)> {
    let quota = res.cpu_quota_us.map_or(INFINITY, |q| {
        let per_sec = (q.max(0) as u64).saturating_mul(1_000_000) / CPU_PERIOD_US;
        per_sec.div_ceil(10_000) * 10_000
    });
    let memory = res.memory_limit.map_or(INFINITY, |m| m.max(0) as u64);
    let mut props = vec![("CPUQuotaPerSecUSec", Value::from(quota))];
    if unified {
        props.push(("CPUWeight", Value::from(shares_to_weight(res.cpu_shares))));
        props.push(("MemoryMax", Value::from(memory)));
    } else {
        props.push(("CPUShares", Value::from(res.cpu_shares)));
        props.push(("MemoryLimit", Value::from(memory)));
    }
    props
}
