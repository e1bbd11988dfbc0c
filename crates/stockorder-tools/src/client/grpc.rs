//! The gRPC client: the original `cmd/client_grpc` as four calls. Answers are printed in the
//! REST JSON shape, so both clients' output reads the same.

use serde_json::Value;
use tonic::transport::{Channel, Endpoint};

use super::{CallError, CreateArgs, ListArgs, OrderApi, render, with_causes};
use crate::proto;
use crate::proto::stock_order_service_client::StockOrderServiceClient;

/// Talks to `stockorder.StockOrderService`. Connects lazily, so the loop keeps going (and
/// reports each failure) while a server is down, and reconnects when it is back.
pub(super) struct GrpcApi {
    client: StockOrderServiceClient<Channel>,
}

impl GrpcApi {
    /// A client for the server at `addr` (`http://host:port`).
    pub(super) fn new(addr: &str) -> anyhow::Result<Self> {
        let endpoint =
            Endpoint::from_shared(addr.to_owned()).map_err(|e| anyhow::anyhow!("--addr {addr:?} is not a URL: {e}"))?;
        Ok(Self {
            client: StockOrderServiceClient::new(endpoint.connect_lazy()),
        })
    }
}

/// `NOT_FOUND: order … not found`. A status that carries a transport error as its source was
/// made on this side (nothing answered), which makes it a transport failure, not a refusal.
fn refused(status: tonic::Status) -> CallError {
    let code = render::code_name(status.code());
    match std::error::Error::source(&status) {
        Some(cause) => CallError::Transport(format!("{code}: {}", with_causes(cause))),
        None => CallError::Refused(format!("{code}: {}", status.message())),
    }
}

/// A proto enum from its name (`"MARKET"`), for flags that are typed as text.
fn enum_value(field: &str, name: Option<&str>, parse: fn(&str) -> Option<i32>) -> Result<i32, CallError> {
    match name {
        None => Ok(0),
        Some(n) => {
            parse(&n.to_ascii_uppercase()).ok_or_else(|| CallError::Invalid(format!("{field}: unknown value {n:?}")))
        }
    }
}

impl OrderApi for GrpcApi {
    async fn create(&mut self, order: &CreateArgs) -> Result<Value, CallError> {
        let request = proto::CreateOrderRequest {
            symbol: order.symbol.clone(),
            order_type: enum_value("type", Some(&order.order_type), |n| {
                proto::OrderType::from_str_name(n).map(Into::into)
            })?,
            order_side: enum_value("side", Some(&order.side), |n| {
                proto::OrderSide::from_str_name(n).map(Into::into)
            })?,
            quantity: order.quantity,
            price: order.price.unwrap_or_default(),
            client_order_id: order.client_order_id.clone().unwrap_or_default(),
        };
        let order = self.client.create_order(request).await.map_err(refused)?;
        Ok(render::order_json(&order.into_inner()))
    }

    async fn get(&mut self, id: &str) -> Result<Value, CallError> {
        let request = proto::GetOrderRequest {
            order_id: id.to_owned(),
        };
        let order = self.client.get_order(request).await.map_err(refused)?;
        Ok(render::order_json(&order.into_inner()))
    }

    async fn list(&mut self, query: &ListArgs) -> Result<Value, CallError> {
        let request = proto::ListOrdersRequest {
            page_size: query.limit.map_or(0, |l| i32::try_from(l).unwrap_or(i32::MAX)),
            page_token: query.page_token.clone().unwrap_or_default(),
            status: enum_value("status", query.status.as_deref(), |n| {
                proto::OrderStatus::from_str_name(n).map(Into::into)
            })?,
            symbol: query.symbol.clone().unwrap_or_default(),
            side: enum_value("side", query.side.as_deref(), |n| {
                proto::OrderSide::from_str_name(n).map(Into::into)
            })?,
        };
        let page = self.client.list_orders(request).await.map_err(refused)?.into_inner();
        let mut out = serde_json::json!({
            "orders": page.orders.iter().map(render::order_json).collect::<Vec<_>>(),
        });
        if !page.next_page_token.is_empty() {
            out["next_page_token"] = Value::String(page.next_page_token);
        }
        Ok(out)
    }

    async fn cancel(&mut self, id: &str) -> Result<Value, CallError> {
        let request = proto::CancelOrderRequest {
            order_id: id.to_owned(),
        };
        let answer = self.client.cancel_order(request).await.map_err(refused)?;
        Ok(serde_json::json!({ "message": answer.into_inner().message }))
    }
}

impl super::EventApi for GrpcApi {
    async fn watch(
        &mut self,
        after: Option<u64>,
        symbol: Option<&str>,
        each: &mut (dyn FnMut(Value) + Send),
        mut stop: std::pin::Pin<&mut (dyn std::future::Future<Output = ()> + Send)>,
    ) -> Result<super::StreamEnd, CallError> {
        let request = proto::WatchOrdersRequest {
            after_sequence: after,
            symbol: symbol.unwrap_or_default().to_owned(),
        };
        let mut stream = tokio::select! {
            biased;
            () = stop.as_mut() => return Ok(super::StreamEnd::Interrupted),
            answer = self.client.watch_orders(request) => answer.map_err(refused)?.into_inner(),
        };
        loop {
            let message = tokio::select! {
                biased;
                () = stop.as_mut() => return Ok(super::StreamEnd::Interrupted),
                message = stream.message() => message,
            };
            match message {
                Ok(Some(event)) => each(serde_json::json!({
                    "sequence": event.sequence,
                    "type": event.r#type,
                    "order": event.order.as_ref().map(render::order_json).unwrap_or_default(),
                })),
                // UNAVAILABLE is how the server ends a stream when it stops: resume elsewhere.
                Ok(None) => return Ok(super::StreamEnd::Ended),
                Err(status) if status.code() == tonic::Code::Unavailable => return Ok(super::StreamEnd::Ended),
                Err(status) => return Err(refused(status)),
            }
        }
    }
}
