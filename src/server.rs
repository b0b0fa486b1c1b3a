//! A whole broker process: a node with its admin endpoint beside it. The binary and the simulator
//! start this; `node` itself knows nothing of the admin endpoint, which reaches the node only
//! through its `NodeHandle` (so the module graph is `server -> admin -> node`, never back).

use crate::config::Config;
use crate::net::Net;
use crate::node::{self, NodeError, RunningNode};

/// Starts a node on `net` and, unless `admin.bind = off`, its admin endpoint; logs the startup
/// line (`flockmq NODE listening for MQTT on ADDR, admin on ADDR|off`) once both listen.
pub async fn start<N: Net>(net: N, config: Config) -> Result<RunningNode, NodeError> {
    let admin = config.admin.clone();
    let mut node = node::start(net.clone(), config).await?;
    if let Some(addr) = admin.bind {
        let local = crate::admin::start(net, addr, admin.token, node.attach()).await?;
        node.set_admin_addr(local);
    }
    tracing::info!(parent: node.span(), "{}", node.startup_line());
    Ok(node)
}

#[cfg(test)]
mod tests {
    use super::start;
    use crate::admin::ctl;
    use crate::config::Config;
    use crate::net::TokioNet;

    /// The endpoint listens beside the node, answers behind its token, is named in the startup
    /// line, and closes with the node's graceful shutdown.
    #[tokio::test]
    async fn the_admin_endpoint_runs_beside_the_node_and_stops_with_it() {
        let config = Config::from_pairs(&[
            ("node.name", "n1@127.0.0.1"),
            ("listener.tcp.bind", "127.0.0.1:0"),
            ("cluster.port", "0"),
            ("admin.bind", "127.0.0.1:0"),
            ("admin.token", "s3cret"),
        ])
        .unwrap();
        let node = start(TokioNet::new(), config).await.unwrap();
        let admin = node.admin_addr().expect("admin.bind is on");
        assert_eq!(
            node.startup_line(),
            format!(
                "flockmq n1@127.0.0.1 listening for MQTT on {}, admin on {admin}",
                node.mqtt_addr()
            )
        );
        let (metrics, clients, denied) = tokio::task::spawn_blocking(move || {
            (
                ctl::get(admin, "/metrics", Some("s3cret")),
                ctl::get(admin, "/api/v1/clients", Some("s3cret")),
                ctl::get(admin, "/metrics", None),
            )
        })
        .await
        .unwrap();
        let metrics = metrics.unwrap();
        assert!(
            metrics.lines().any(|l| l == "flockmq_connections 0"),
            "{metrics}"
        );
        assert!(ctl::parse_clients(&clients.unwrap()).unwrap().is_empty());
        assert!(matches!(
            denied,
            Err(ctl::CtlError::Status { status: 401, .. })
        ));
        node.shutdown().await;
        assert!(std::net::TcpStream::connect(admin).is_err());
    }

    /// `admin.bind = off`: no endpoint, and the startup line says so.
    #[tokio::test]
    async fn admin_off_starts_no_endpoint() {
        let config = Config::from_pairs(&[
            ("node.name", "n1@127.0.0.1"),
            ("listener.tcp.bind", "127.0.0.1:0"),
            ("cluster.port", "0"),
            ("admin.bind", "off"),
        ])
        .unwrap();
        let node = start(TokioNet::new(), config).await.unwrap();
        assert_eq!(node.admin_addr(), None);
        assert!(node.startup_line().ends_with("admin on off"));
        node.shutdown().await;
    }

    /// The admin endpoint on a simulated turmoil host, through `SimNet`.
    #[cfg(feature = "sim")]
    #[test]
    fn the_admin_endpoint_serves_on_a_turmoil_host() {
        use std::time::Duration;

        use tokio::io::{AsyncReadExt, AsyncWriteExt};

        use crate::net::SimWorld;

        let mut sim = turmoil::Builder::new()
            .simulation_duration(Duration::from_secs(10))
            .build();
        sim.host("n1", || async {
            let config = Config::from_pairs(&[
                ("node.name", "n1@n1"),
                ("listener.tcp.bind", "0.0.0.0:1883"),
                ("admin.bind", "0.0.0.0:18083"),
                ("admin.token", "t"),
            ])?;
            let _node = start(SimWorld::new(1).net(), config).await?;
            std::future::pending::<()>().await;
            Ok(())
        });
        sim.client("client", async {
            let mut http = turmoil::net::TcpStream::connect(("n1", 18083)).await?;
            http.write_all(b"GET /metrics HTTP/1.1\r\nHost: n1\r\nAuthorization: Bearer t\r\nConnection: close\r\n\r\n")
                .await?;
            let mut body = Vec::new();
            http.read_to_end(&mut body).await?;
            let body = String::from_utf8(body)?;
            assert!(body.starts_with("HTTP/1.1 200"), "{body}");
            assert!(body.lines().any(|l| l == "flockmq_connections 0"), "{body}");
            Ok(())
        });
        sim.run().unwrap();
    }
}
