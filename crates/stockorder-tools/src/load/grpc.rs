//! gRPC requests for the load generator: one HTTP/2 connection per worker (a tonic `Channel`,
//! which reconnects by itself after a failure), the stock tonic client as users run it.

use tonic::transport::{Channel, Endpoint};
use tonic_health::pb::HealthCheckRequest;
use tonic_health::pb::health_client::HealthClient;

use super::{Call, Outcome};
use crate::proto;
use crate::proto::stock_order_service_client::StockOrderServiceClient;

/// One worker's connection to the gRPC API.
pub struct GrpcDriver {
    orders: StockOrderServiceClient<Channel>,
    health: HealthClient<Channel>,
}

fn market_order() -> proto::CreateOrderRequest {
    proto::CreateOrderRequest {
        symbol: "AAPL".into(),
        order_type: proto::OrderType::Market.into(),
        order_side: proto::OrderSide::Buy.into(),
        quantity: 100,
        ..Default::default()
    }
}

/// A buy limit far below AAPL's simulated price: it rests.
fn resting_order() -> proto::CreateOrderRequest {
    proto::CreateOrderRequest {
        order_type: proto::OrderType::Limit.into(),
        price: 1.5,
        ..market_order()
    }
}

impl GrpcDriver {
    /// A driver for `addr` (host:port). Each driver gets its own connection (established on
    /// first use), so concurrency means connections, as with HTTP.
    pub fn new(addr: &str) -> anyhow::Result<Self> {
        let channel = Endpoint::from_shared(format!("http://{addr}"))
            .map_err(|e| anyhow::anyhow!("--addr {addr:?}: {e}"))?
            .tcp_nodelay(true)
            .connect_lazy();
        Ok(Self {
            orders: StockOrderServiceClient::new(channel.clone()),
            health: HealthClient::new(channel),
        })
    }

    /// Sends one `call` (`id` for `get`) and says what came back.
    pub async fn send(&mut self, call: Call, id: &str) -> Outcome {
        let status = match call {
            Call::Create => self.orders.create_order(market_order()).await.err(),
            Call::CreateResting => self.orders.create_order(resting_order()).await.err(),
            Call::Get => self
                .orders
                .get_order(proto::GetOrderRequest { order_id: id.into() })
                .await
                .err(),
            Call::List => self
                .orders
                .list_orders(proto::ListOrdersRequest {
                    page_size: 100,
                    ..Default::default()
                })
                .await
                .err(),
            Call::Health => self.health.check(HealthCheckRequest::default()).await.err(),
        };
        status.map_or(Outcome::Grpc(0), |s| Outcome::from_status(&s))
    }

    /// Places one market order: the outcome, and the order's id when it was acknowledged.
    pub async fn place_order(&mut self) -> (Outcome, Option<String>) {
        match self.orders.create_order(market_order()).await {
            Ok(order) => (Outcome::Grpc(0), Some(order.into_inner().id)),
            Err(status) => (Outcome::from_status(&status), None),
        }
    }

    /// Creates `n` orders and returns their ids (positions for an echo server that sends none).
    pub async fn seed(&mut self, n: usize) -> anyhow::Result<Vec<String>> {
        let mut ids = Vec::with_capacity(n);
        for i in 0..n.max(1) {
            let order = self
                .orders
                .create_order(market_order())
                .await
                .map_err(|s| anyhow::anyhow!("seeding orders failed: {}: {}", s.code(), s.message()))?
                .into_inner();
            ids.push(if order.id.is_empty() { i.to_string() } else { order.id });
        }
        Ok(ids)
    }
}
