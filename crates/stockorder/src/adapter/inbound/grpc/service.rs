//! The tonic service: decode, call the order service, encode. No business rule lives here; the
//! REST handlers make the same calls.

use std::pin::Pin;
use std::sync::Arc;

use futures_util::{Stream, StreamExt as _};
use tonic::{Request, Response, Status};

use crate::domain::{RawOrder, Symbol};
use crate::port::{CANCELLED_MESSAGE, EventStart, OrderService};

use super::convert::{list_query, order_id};
use super::proto;
use super::proto::stock_order_service_server::{StockOrderService, StockOrderServiceServer};

/// `stockorder.StockOrderService` over an [`OrderService`].
pub struct GrpcOrders<S> {
    service: Arc<S>,
}

impl<S: OrderService> GrpcOrders<S> {
    /// Serves `service` over gRPC.
    pub fn new(service: Arc<S>) -> Self {
        Self { service }
    }

    /// The tonic server for this service, to add to a router.
    pub fn into_server(self) -> StockOrderServiceServer<Self> {
        // The limit the framing check enforces first (with RESOURCE_EXHAUSTED), stated here too
        // so the two cannot drift apart.
        StockOrderServiceServer::new(self).max_decoding_message_size(super::MAX_MESSAGE_BYTES)
    }
}

/// The events `WatchOrders` sends.
pub type OrderEvents = Pin<Box<dyn Stream<Item = Result<proto::OrderEvent, Status>> + Send>>;

#[tonic::async_trait]
impl<S: OrderService> StockOrderService for GrpcOrders<S> {
    type WatchOrdersStream = OrderEvents;

    async fn watch_orders(
        &self,
        request: Request<proto::WatchOrdersRequest>,
    ) -> Result<Response<Self::WatchOrdersStream>, Status> {
        let request = request.into_inner();
        let symbol = Some(request.symbol.trim())
            .filter(|s| !s.is_empty())
            .map(Symbol::parse)
            .transpose()?;
        let start = request.after_sequence.map_or(EventStart::Live, EventStart::After);
        let events = Arc::clone(&self.service).follow(start, symbol).await?;
        Ok(Response::new(Box::pin(events.map(|event| {
            event
                .map(|e| proto::OrderEvent {
                    sequence: e.sequence,
                    r#type: e.kind.as_str().to_owned(),
                    order: Some(proto::StockOrder::from(&e.order)),
                })
                .map_err(Status::from)
        }))))
    }

    async fn create_order(
        &self,
        request: Request<proto::CreateOrderRequest>,
    ) -> Result<Response<proto::StockOrder>, Status> {
        let new = RawOrder::from(request.into_inner()).validate()?;
        let created = self.service.create(new).await?;
        Ok(Response::new(proto::StockOrder::from(&created.order)))
    }

    async fn get_order(&self, request: Request<proto::GetOrderRequest>) -> Result<Response<proto::StockOrder>, Status> {
        let id = order_id(&request.get_ref().order_id)?;
        let order = self.service.get(id).await?;
        Ok(Response::new(proto::StockOrder::from(&order)))
    }

    async fn list_orders(
        &self,
        request: Request<proto::ListOrdersRequest>,
    ) -> Result<Response<proto::ListOrdersResponse>, Status> {
        let query = list_query(request.get_ref())?;
        let page = self.service.list(query).await?;
        Ok(Response::new(proto::ListOrdersResponse {
            orders: page.orders.iter().map(proto::StockOrder::from).collect(),
            next_page_token: page.next.map(|t| t.encode()).unwrap_or_default(),
        }))
    }

    async fn cancel_order(
        &self,
        request: Request<proto::CancelOrderRequest>,
    ) -> Result<Response<proto::CancelOrderResponse>, Status> {
        let id = order_id(&request.get_ref().order_id)?;
        self.service.cancel(id).await?;
        Ok(Response::new(proto::CancelOrderResponse {
            message: CANCELLED_MESSAGE.to_owned(),
        }))
    }
}
