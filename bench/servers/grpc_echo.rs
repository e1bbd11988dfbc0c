//! The gRPC baseline the benchmarks compare against: a bare tonic server for the same proto that
//! does no work.
//!
//! `CreateOrder` answers the request's fields back as a `StockOrder`, `GetOrder` answers an order
//! with the asked-for id, and `grpc.health.v1.Health` is served as in the real service. The
//! service's gRPC figures are reported as a ratio of these, measured in the same run.
//!
//! Run: `cargo run --release -p stockorder-bench --bin grpc_echo -- 127.0.0.1:9001`

use stockorder::adapter::inbound::grpc::proto;
use stockorder::adapter::inbound::grpc::proto::stock_order_service_server::{
    StockOrderService, StockOrderServiceServer,
};
use tonic::{Request, Response, Status};

struct Echo;

#[tonic::async_trait]
impl StockOrderService for Echo {
    type WatchOrdersStream = stockorder::adapter::inbound::grpc::OrderEvents;

    /// No events: the echo measures unary calls only.
    async fn watch_orders(
        &self,
        _: Request<proto::WatchOrdersRequest>,
    ) -> Result<Response<Self::WatchOrdersStream>, Status> {
        Err(Status::unimplemented("the echo server has no event log"))
    }

    async fn create_order(
        &self,
        request: Request<proto::CreateOrderRequest>,
    ) -> Result<Response<proto::StockOrder>, Status> {
        let r = request.into_inner();
        Ok(Response::new(proto::StockOrder {
            symbol: r.symbol,
            order_type: r.order_type,
            order_side: r.order_side,
            quantity: r.quantity,
            price: r.price,
            client_order_id: r.client_order_id,
            ..Default::default()
        }))
    }

    async fn get_order(&self, request: Request<proto::GetOrderRequest>) -> Result<Response<proto::StockOrder>, Status> {
        Ok(Response::new(proto::StockOrder {
            id: request.into_inner().order_id,
            ..Default::default()
        }))
    }

    async fn list_orders(
        &self,
        _: Request<proto::ListOrdersRequest>,
    ) -> Result<Response<proto::ListOrdersResponse>, Status> {
        Ok(Response::new(proto::ListOrdersResponse::default()))
    }

    async fn cancel_order(
        &self,
        _: Request<proto::CancelOrderRequest>,
    ) -> Result<Response<proto::CancelOrderResponse>, Status> {
        Ok(Response::new(proto::CancelOrderResponse::default()))
    }
}

#[tokio::main]
async fn main() -> Result<(), Box<dyn std::error::Error>> {
    let addr = std::env::args().nth(1).unwrap_or_else(|| "127.0.0.1:9001".into());
    let listener = tokio::net::TcpListener::bind(&addr).await?;
    println!("grpc echo listening on {}", listener.local_addr()?);
    let (_health, health_service) = tonic_health::server::health_reporter();
    tonic::transport::Server::builder()
        .add_service(StockOrderServiceServer::new(Echo))
        .add_service(health_service)
        .serve_with_incoming(tonic::transport::server::TcpIncoming::from(listener).with_nodelay(Some(true)))
        .await?;
    Ok(())
}
