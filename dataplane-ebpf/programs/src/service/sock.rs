//! Socket-level translation for the node's own processes: the cgroup
//! `connect4`/`sendmsg4` hooks send a socket to a backend in place of a
//! service address, `recvmsg4`/`getpeername4` show the service address
//! again; limited to the node's network namespace.

#[allow(clippy::wildcard_imports)]
use super::*;

// --- Socket-level translation for the node's own processes -------------
//
// The tc programs sit on pod interfaces, so a process of the node itself
// (in the node's network namespace) would send Service traffic to the
// default route. These cgroup hooks translate its sockets instead: at
// connect (TCP, connected UDP) and sendmsg (unconnected UDP) the service
// address is replaced by a backend's, chosen the same way as for pods
// (affinity keyed by client 0, "this node"); recvmsg and getpeername show
// the service address again. Only sockets of the node's namespace are
// touched: pods are left to the tc path, and namespaces of other
// instances (tests) to their own programs.

const SOCK_ALLOW: i32 = 1;
const SOCK_DENY: i32 = 0;

#[inline(always)]
fn node_netns(ctx: &SockAddrContext) -> bool {
    let want = HOST_NETNS.get(0).copied().unwrap_or(0);
    // SAFETY: a sock_addr context, which the helper accepts.
    want != 0 && unsafe { bpf_get_netns_cookie(ctx.as_ptr()) } == want
}

#[inline(always)]
fn sock_forward(ctx: &SockAddrContext) -> i32 {
    if !node_netns(ctx) {
        return SOCK_ALLOW;
    }
    // SAFETY: the kernel passes a valid context for the program's lifetime.
    let sa = unsafe { &mut *ctx.sock_addr };
    let proto = match sa.protocol {
        6 => IPPROTO_TCP,
        17 => IPPROTO_UDP,
        _ => return SOCK_ALLOW,
    };
    let vip = sa.user_ip4;
    // The port is in network order in the low 16 bits.
    let vport = sa.user_port as u16;
    let key = ServiceKey {
        addr: vip,
        port: vport,
        proto,
        scope: SCOPE_ADDR,
    };
    // SAFETY: copied out at once.
    let svc = match unsafe { SERVICES.get(key) }.copied() {
        Some(v) => v,
        None => {
            // A NodePort on one of the node's addresses, or on loopback.
            // SAFETY: copied out at once.
            let local =
                (u32::from_be(vip) >> 24) == 127 || unsafe { NODE_ADDRS.get(vip) }.is_some();
            if !local {
                return SOCK_ALLOW;
            }
            let np = ServiceKey {
                addr: 0,
                port: vport,
                proto,
                scope: SCOPE_NODEPORT,
            };
            // SAFETY: copied out at once.
            match unsafe { SERVICES.get(np) }.copied() {
                Some(v) => v,
                None => return SOCK_ALLOW,
            }
        }
    };
    if svc.count == 0 {
        count(SvcCounter::HostReject);
        return SOCK_DENY;
    }
    let Some((_, b)) = select(0, &svc) else {
        count(SvcCounter::MapFull);
        return SOCK_ALLOW;
    };
    // SAFETY: a sock_addr context, which the helper accepts.
    let cookie = unsafe { bpf_get_socket_cookie(ctx.as_ptr()) };
    let rk = SockRevKey {
        cookie,
        addr: b.addr,
        port: b.port,
        _pad: 0,
    };
    let rv = SockRevValue {
        vip,
        vport,
        _pad: 0,
    };
    if SOCK_REV.insert(rk, rv, 0).is_err() {
        count(SvcCounter::MapFull);
    }
    sa.user_ip4 = b.addr;
    sa.user_port = u32::from(b.port);
    count(SvcCounter::HostSocket);
    SOCK_ALLOW
}

#[inline(always)]
fn sock_reverse(ctx: &SockAddrContext) -> i32 {
    if !node_netns(ctx) {
        return SOCK_ALLOW;
    }
    // SAFETY: the kernel passes a valid context for the program's lifetime.
    let sa = unsafe { &mut *ctx.sock_addr };
    // SAFETY: a sock_addr context, which the helper accepts.
    let cookie = unsafe { bpf_get_socket_cookie(ctx.as_ptr()) };
    let rk = SockRevKey {
        cookie,
        addr: sa.user_ip4,
        port: sa.user_port as u16,
        _pad: 0,
    };
    // SAFETY: copied out at once.
    if let Some(rv) = unsafe { SOCK_REV.get(rk) }.copied() {
        sa.user_ip4 = rv.vip;
        sa.user_port = u32::from(rv.vport);
    }
    SOCK_ALLOW
}

#[cgroup_sock_addr(connect4)]
pub fn sock_connect4(ctx: SockAddrContext) -> i32 {
    sock_forward(&ctx)
}

#[cgroup_sock_addr(sendmsg4)]
pub fn sock_sendmsg4(ctx: SockAddrContext) -> i32 {
    sock_forward(&ctx)
}

#[cgroup_sock_addr(recvmsg4)]
pub fn sock_recvmsg4(ctx: SockAddrContext) -> i32 {
    sock_reverse(&ctx)
}

#[cgroup_sock_addr(getpeername4)]
pub fn sock_getpeername4(ctx: SockAddrContext) -> i32 {
    sock_reverse(&ctx)
}
