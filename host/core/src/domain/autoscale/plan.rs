//! The reconcile arithmetic: what the loop should do for one AutoScale config now (pure).

use uuid::Uuid;

use super::config::AutoScaleConfig;
use super::server::ServerStatus;

/// One server as the planner sees it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ServerState {
    pub id: Uuid,
    pub status: ServerStatus,
    pub sessions: u32,
    pub max_sessions: u32,
    pub spent: bool,
    pub created_at_ms: u64,
    pub idle_since_ms: Option<u64>,
}

/// What the reconcile loop should do for one config now.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Plan {
    /// VMs to create.
    pub create: u32,
    /// Servers to destroy, and why.
    pub destroy: Vec<(Uuid, DestroyReason)>,
    /// Free session slots counted (provisioning servers included).
    pub available: u32,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum DestroyReason {
    /// Did not check in within `provision_timeout`.
    ProvisionTimeout,
    /// Not reusable, and its session ended.
    Spent,
    /// Idle beyond `downscale_backoff` while the minimum holds without it.
    Surplus,
    /// Drained on an operator's request, and now without sessions.
    Drained,
}

impl DestroyReason {
    pub fn as_str(self) -> &'static str {
        match self {
            DestroyReason::ProvisionTimeout => "provision_timeout",
            DestroyReason::Spent => "spent",
            DestroyReason::Surplus => "surplus",
            DestroyReason::Drained => "drained",
        }
    }
}

/// The reconcile arithmetic for one config (pure).
///
/// Available sessions are the free slots of the config's live servers, provisioning ones
/// included. Below `minimum_available_sessions`, create `ceil(deficit / per server)` VMs,
/// capped so that the servers whose VMs may exist (being destroyed included: a destroy
/// can keep failing) never exceed `max_instances`. Destroy VMs that have not checked in by
/// `provision_timeout`, spent non-reusable servers and drained ones once idle, and idle
/// surplus servers after `downscale_backoff` while the minimum still holds without them.
pub fn plan(
    config: &AutoScaleConfig,
    servers: &[ServerState],
    now_ms: u64,
    max_instances: Option<u32>,
) -> Plan {
    let mut destroy = Vec::new();
    let timeout_ms = config.provision_timeout * 1000;
    let mut live: Vec<&ServerState> = Vec::new();
    for server in servers {
        match server.status {
            ServerStatus::Provisioning
                if now_ms.saturating_sub(server.created_at_ms) > timeout_ms =>
            {
                destroy.push((server.id, DestroyReason::ProvisionTimeout));
            }
            ServerStatus::Provisioning => live.push(server),
            ServerStatus::Running if server.spent && server.sessions == 0 => {
                destroy.push((server.id, DestroyReason::Spent));
            }
            ServerStatus::Running if !server.spent => live.push(server),
            ServerStatus::Draining if server.sessions == 0 => {
                destroy.push((server.id, DestroyReason::Drained));
            }
            _ => {}
        }
    }
    let free = |s: &ServerState| s.max_sessions.saturating_sub(s.sessions);
    let mut available: u32 = live.iter().map(|s| free(s)).sum();
    let minimum = config.minimum_available_sessions;
    let per_server = config.max_sessions_per_server.max(1);
    // Every server whose VM may still exist holds one of the provider's instances.
    let holding_vms = servers
        .iter()
        .filter(|s| !matches!(s.status, ServerStatus::Failed | ServerStatus::Lost))
        .count() as u32;

    let mut create = 0;
    if available < minimum {
        create = (minimum - available).div_ceil(per_server);
        if let Some(max) = max_instances {
            create = create.min(max.saturating_sub(holding_vms));
        }
    } else {
        // Scale down: the idle servers that have waited out the back-off, longest idle
        // first, as long as the minimum holds without each.
        let backoff_ms = config.downscale_backoff * 1000;
        let mut idle: Vec<&&ServerState> = live
            .iter()
            .filter(|s| s.status == ServerStatus::Running && s.sessions == 0)
            .filter(|s| {
                s.idle_since_ms
                    .is_some_and(|since| now_ms.saturating_sub(since) >= backoff_ms)
            })
            .collect();
        idle.sort_by_key(|s| (s.idle_since_ms, s.id));
        for server in idle {
            if available - free(server) >= minimum {
                available -= free(server);
                destroy.push((server.id, DestroyReason::Surplus));
            }
        }
    }
    Plan {
        create,
        destroy,
        available,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::domain::autoscale::fixtures::config;

    fn server(n: u128, status: ServerStatus, sessions: u32) -> ServerState {
        ServerState {
            id: Uuid::from_u128(n),
            status,
            sessions,
            max_sessions: 4,
            spent: false,
            created_at_ms: 1_000_000,
            idle_since_ms: None,
        }
    }

    const NOW: u64 = 1_100_000;

    #[test]
    fn an_empty_pool_gets_enough_vms_for_the_minimum() {
        let plan = plan(&config(10, 4), &[], NOW, None);
        assert_eq!((plan.create, plan.available), (3, 0), "ceil(10 / 4)");
        let plan = super::plan(&config(8, 4), &[], NOW, None);
        assert_eq!(plan.create, 2);
        let plan = super::plan(&config(0, 4), &[], NOW, None);
        assert_eq!(plan.create, 0);
    }

    #[test]
    fn provisioning_servers_count_as_available() {
        let servers = [
            server(1, ServerStatus::Provisioning, 0),
            server(2, ServerStatus::Running, 3),
        ];
        let plan = plan(&config(10, 4), &servers, NOW, None);
        assert_eq!(plan.available, 5);
        assert_eq!(plan.create, 2, "deficit 5: two more servers of 4");
    }

    #[test]
    fn max_instances_caps_creation() {
        let servers = [
            server(1, ServerStatus::Running, 4),
            server(2, ServerStatus::Running, 4),
        ];
        assert_eq!(plan(&config(10, 4), &servers, NOW, Some(3)).create, 1);
        assert_eq!(plan(&config(10, 4), &servers, NOW, Some(2)).create, 0);
        assert_eq!(plan(&config(10, 4), &servers, NOW, Some(1)).create, 0);
    }

    #[test]
    fn max_instances_counts_servers_being_destroyed() {
        // A destroy that keeps failing: its VM still runs, so it takes a place under the cap.
        let servers = [
            server(1, ServerStatus::Running, 4),
            server(2, ServerStatus::Destroying, 0),
        ];
        assert_eq!(plan(&config(4, 4), &servers, NOW, Some(2)).create, 0);
        assert_eq!(plan(&config(4, 4), &servers, NOW, Some(3)).create, 1);
        // So does a server this very plan destroys, until it is gone.
        let mut late = server(3, ServerStatus::Provisioning, 0);
        late.created_at_ms = NOW - 600_001;
        let plan = plan(
            &config(8, 4),
            &[server(1, ServerStatus::Running, 4), late],
            NOW,
            Some(2),
        );
        assert_eq!(plan.destroy.len(), 1);
        assert_eq!(plan.create, 0, "the replacement waits for the destroy");
        // A lost server's VM is gone: it holds nothing.
        let lost = [
            server(1, ServerStatus::Running, 4),
            server(2, ServerStatus::Lost, 0),
        ];
        assert_eq!(super::plan(&config(4, 4), &lost, NOW, Some(2)).create, 1);
    }

    #[test]
    fn drained_servers_go_once_their_sessions_end_and_do_not_count() {
        let servers = [
            server(1, ServerStatus::Draining, 0),
            server(2, ServerStatus::Draining, 2),
            server(3, ServerStatus::Running, 0),
        ];
        let plan = plan(&config(4, 4), &servers, NOW, None);
        assert_eq!(plan.destroy, [(Uuid::from_u128(1), DestroyReason::Drained)]);
        assert_eq!((plan.available, plan.create), (4, 0));
    }

    #[test]
    fn a_vm_that_never_checks_in_is_destroyed_and_replaced() {
        let mut late = server(1, ServerStatus::Provisioning, 0);
        late.created_at_ms = NOW - 600_001;
        let plan = plan(&config(4, 4), &[late], NOW, None);
        assert_eq!(
            plan.destroy,
            [(Uuid::from_u128(1), DestroyReason::ProvisionTimeout)]
        );
        assert_eq!(plan.create, 1, "its replacement, in the same pass");
    }

    #[test]
    fn spent_servers_go_once_idle_and_do_not_count() {
        let mut spent = server(1, ServerStatus::Running, 0);
        spent.spent = true;
        let mut busy_spent = server(2, ServerStatus::Running, 1);
        busy_spent.spent = true;
        let plan = plan(&config(4, 4), &[spent, busy_spent], NOW, None);
        assert_eq!(plan.destroy, [(Uuid::from_u128(1), DestroyReason::Spent)]);
        assert_eq!((plan.available, plan.create), (0, 1));
    }

    #[test]
    fn idle_surplus_goes_after_the_backoff_while_the_minimum_holds() {
        let idle = |n, since| ServerState {
            idle_since_ms: Some(since),
            ..server(n, ServerStatus::Running, 0)
        };
        let servers = [
            idle(1, NOW - 400_000),
            idle(2, NOW - 500_000),
            idle(3, NOW - 100_000),
        ];
        // 12 free, minimum 4: two may go, but server 3 has not waited out the back-off.
        let plan = plan(&config(4, 4), &servers, NOW, None);
        assert_eq!(
            plan.destroy,
            [
                (Uuid::from_u128(2), DestroyReason::Surplus),
                (Uuid::from_u128(1), DestroyReason::Surplus)
            ]
        );
        assert_eq!(plan.create, 0);
        // With a minimum of 9, only one may go.
        let plan = super::plan(&config(9, 4), &servers, NOW, None);
        assert_eq!(plan.destroy.len(), 0, "12 - 4 = 8 < 9");
        let plan = super::plan(&config(8, 4), &servers, NOW, None);
        assert_eq!(plan.destroy, [(Uuid::from_u128(2), DestroyReason::Surplus)]);
    }

    #[test]
    fn busy_draining_and_destroying_servers_are_left_alone() {
        let servers = [
            server(1, ServerStatus::Running, 4),
            server(2, ServerStatus::Draining, 1),
            server(3, ServerStatus::Destroying, 0),
        ];
        let plan = plan(&config(4, 4), &servers, NOW, None);
        assert!(plan.destroy.is_empty());
        assert_eq!((plan.available, plan.create), (0, 1));
    }
}
