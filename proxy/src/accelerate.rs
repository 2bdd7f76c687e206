//! NodePort acceleration at XDP on the node's own interfaces: which of them
//! get `xdp_from_netdev` in front of `from_netdev` ([`decide`], pure), and
//! attaching it, with tc alone kept, and the reason logged, wherever the
//! driver or the kernel refuses.

use rudder_dataplane::service::{Acceleration, ServiceDataplane, is_physical};
use tracing::{debug, info, warn};

/// What to do with XDP on one node interface.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum XdpPlan {
    Attach,
    /// tc alone, for this reason (removing what an agent configured
    /// otherwise attached).
    Skip(&'static str),
    /// Remove what an agent configured otherwise left attached.
    Detach,
}

/// The plan for an interface of `kind` (netlink's link kind; `None` for a
/// device without one, such as a NIC) that is `physical` or not.
pub fn decide(mode: Acceleration, kind: Option<&str>, physical: bool) -> XdpPlan {
    match mode {
        Acceleration::Disabled => XdpPlan::Detach,
        _ if kind == Some("vxlan") => XdpPlan::Skip("VXLAN devices have no XDP in their driver"),
        Acceleration::BestEffort if !physical => {
            XdpPlan::Skip("a virtual device (best-effort accelerates NICs only)")
        }
        Acceleration::Native | Acceleration::BestEffort => XdpPlan::Attach,
    }
}

/// Applies the plan for `iface` (tc's `from_netdev` is already on it).
pub(crate) fn accelerate(
    dp: &mut ServiceDataplane,
    iface: &str,
    kind: Option<&str>,
    mode: Acceleration,
) {
    match decide(mode, kind, is_physical(iface)) {
        XdpPlan::Detach => match dp.detach_xdp(iface) {
            Ok(true) => info!(iface, "XDP acceleration removed (disabled)"),
            Ok(false) => {}
            Err(e) => warn!(iface, error = %e, "removing the XDP program"),
        },
        XdpPlan::Skip(why) => {
            // What an agent configured otherwise attached goes too.
            match dp.detach_xdp(iface) {
                Ok(true) => info!(iface, why, "XDP acceleration removed: NodePorts on tc only"),
                Ok(false) => debug!(iface, why, "NodePorts on tc only"),
                Err(e) => warn!(iface, error = %e, "removing the XDP program"),
            }
        }
        XdpPlan::Attach => match dp.attach_xdp(iface) {
            Ok(()) => info!(iface, "NodePorts accelerated at XDP (driver mode)"),
            Err(e) => {
                let error = rudder_dataplane::tc::error_chain(&e);
                if mode == Acceleration::Native {
                    warn!(
                        iface,
                        error, "native XDP refused: NodePorts on tc only here"
                    );
                } else {
                    info!(iface, error, "no native XDP: NodePorts on tc only here");
                }
            }
        },
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn acceleration_goes_where_the_mode_and_the_device_allow() {
        use Acceleration::{BestEffort, Disabled, Native};
        assert_eq!(decide(Disabled, None, true), XdpPlan::Detach);
        assert_eq!(decide(Disabled, Some("veth"), false), XdpPlan::Detach);
        assert_eq!(decide(BestEffort, None, true), XdpPlan::Attach);
        assert!(matches!(
            decide(BestEffort, Some("veth"), false),
            XdpPlan::Skip(_)
        ));
        assert!(matches!(
            decide(BestEffort, Some("vxlan"), false),
            XdpPlan::Skip(_)
        ));
        assert_eq!(decide(Native, Some("veth"), false), XdpPlan::Attach);
        assert!(matches!(
            decide(Native, Some("vxlan"), false),
            XdpPlan::Skip(_)
        ));
        assert_eq!("best-effort".parse(), Ok(BestEffort));
        assert_eq!("native".parse(), Ok(Native));
        assert_eq!("disabled".parse(), Ok(Disabled));
        assert!("on".parse::<Acceleration>().is_err());
    }
}
