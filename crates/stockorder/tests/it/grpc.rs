//! The gRPC API (docs/api.md) over a real socket: every RPC, every error code, reflection,
//! health, wire compatibility with the original proto, and one store behind REST and gRPC.

use crate::common::{TestApp, grpc_market_order, market_order, spawn_app};
use serde_json::Value;
use stockorder::adapter::inbound::grpc::proto;
use stockorder::adapter::inbound::grpc::proto::stock_order_service_client::StockOrderServiceClient;
use tonic::Code;
use tonic::transport::Channel;

async fn channel(app: &TestApp) -> Channel {
    Channel::from_shared(format!("http://{}", app.grpc_addr))
        .unwrap()
        .connect()
        .await
        .expect("connect to the gRPC port")
}

async fn client(app: &TestApp) -> StockOrderServiceClient<Channel> {
    StockOrderServiceClient::new(channel(app).await)
}

fn limit(symbol: &str, price: f64) -> proto::CreateOrderRequest {
    proto::CreateOrderRequest {
        symbol: symbol.into(),
        order_type: proto::OrderType::Limit.into(),
        order_side: proto::OrderSide::Sell.into(),
        quantity: 50,
        price,
        ..Default::default()
    }
}

fn get(id: &str) -> proto::GetOrderRequest {
    proto::GetOrderRequest { order_id: id.into() }
}

fn cancel(id: &str) -> proto::CancelOrderRequest {
    proto::CancelOrderRequest { order_id: id.into() }
}

#[tokio::test]
async fn every_rpc_works_and_rest_sees_the_same_orders() {
    let app = spawn_app().await;
    let mut grpc = client(&app).await;

    let placed = grpc.create_order(grpc_market_order()).await.unwrap().into_inner();
    assert_eq!(placed.symbol, "AAPL");
    assert_eq!(placed.order_type(), proto::OrderType::Market);
    assert_eq!(placed.order_side(), proto::OrderSide::Buy);
    assert_eq!(placed.quantity, 100);
    assert_eq!(placed.price, 0.0, "a MARKET order has no price");
    assert_eq!(placed.status(), proto::OrderStatus::Pending);
    assert_eq!(placed.created_at, placed.updated_at);
    assert!(placed.created_at.is_some());

    // gRPC → REST.
    let over_rest: Value = app
        .get(&format!("/api/orders/{}", placed.id))
        .await
        .json()
        .await
        .unwrap();
    assert_eq!(over_rest["id"], placed.id.as_str());
    assert_eq!(over_rest["status"], "PENDING");
    let rest_created = time::OffsetDateTime::parse(
        over_rest["created_at"].as_str().unwrap(),
        &time::format_description::well_known::Rfc3339,
    )
    .unwrap();
    let grpc_created = placed.created_at.unwrap();
    assert_eq!(rest_created.unix_timestamp(), grpc_created.seconds);
    assert_eq!(rest_created.nanosecond() as i32, grpc_created.nanos);

    // REST → gRPC.
    let made_over_rest: Value = app.post_json("/api/orders", market_order()).await.json().await.unwrap();
    let id = made_over_rest["id"].as_str().unwrap();
    let seen = grpc.get_order(get(id)).await.unwrap().into_inner();
    assert_eq!(seen.id, id);
    assert_eq!(seen.quantity, 100);

    let priced = grpc.create_order(limit("googl", 150.75)).await.unwrap().into_inner();
    assert_eq!(priced.symbol, "GOOGL", "symbols are upper-cased");
    assert_eq!(priced.price, 150.75);

    let listed = grpc
        .list_orders(proto::ListOrdersRequest::default())
        .await
        .unwrap()
        .into_inner();
    let ids: Vec<&str> = listed.orders.iter().map(|o| o.id.as_str()).collect();
    assert_eq!(ids, [priced.id.as_str(), id, placed.id.as_str()], "newest first");
    assert!(listed.next_page_token.is_empty(), "one page holds them all");

    let cancelled = grpc.cancel_order(cancel(&placed.id)).await.unwrap().into_inner();
    assert_eq!(cancelled.message, "order cancelled successfully");
    let after = grpc.get_order(get(&placed.id)).await.unwrap().into_inner();
    assert_eq!(after.status(), proto::OrderStatus::Cancelled);
    assert!(after.updated_at.unwrap().seconds >= after.created_at.unwrap().seconds);

    let again = grpc.cancel_order(cancel(&placed.id)).await.unwrap_err();
    assert_eq!(again.code(), Code::FailedPrecondition, "{again:?}");
    assert!(again.message().contains("CANCELLED"), "{}", again.message());
    app.stop().await;
}

#[tokio::test]
async fn unknown_ids_are_not_found() {
    let app = spawn_app().await;
    let mut grpc = client(&app).await;
    let nobody = "01a21143-0673-7066-bc07-a4be0007c3d5";
    assert_eq!(grpc.get_order(get(nobody)).await.unwrap_err().code(), Code::NotFound);
    assert_eq!(
        grpc.cancel_order(cancel(nobody)).await.unwrap_err().code(),
        Code::NotFound
    );
    app.stop().await;
}

#[tokio::test]
async fn client_order_id_replays_or_is_already_exists() {
    let app = spawn_app().await;
    let mut grpc = client(&app).await;
    let keyed = proto::CreateOrderRequest {
        client_order_id: "grpc-key-1".into(),
        ..grpc_market_order()
    };
    let first = grpc.create_order(keyed.clone()).await.unwrap().into_inner();
    assert_eq!(first.client_order_id, "grpc-key-1");
    let retry = grpc.create_order(keyed.clone()).await.unwrap().into_inner();
    assert_eq!(retry.id, first.id, "a retry places nothing new");

    let other = proto::CreateOrderRequest { quantity: 7, ..keyed };
    let conflict = grpc.create_order(other).await.unwrap_err();
    assert_eq!(conflict.code(), Code::AlreadyExists, "{conflict:?}");
    assert!(conflict.message().contains("grpc-key-1"));

    let all = grpc.list_orders(proto::ListOrdersRequest::default()).await.unwrap();
    assert_eq!(all.into_inner().orders.len(), 1);
    app.stop().await;
}

#[tokio::test]
async fn bad_input_is_invalid_argument_naming_the_field() {
    let app = spawn_app().await;
    let mut grpc = client(&app).await;
    let creates = [
        (
            proto::CreateOrderRequest {
                symbol: String::new(),
                ..grpc_market_order()
            },
            "symbol",
        ),
        (
            proto::CreateOrderRequest {
                symbol: "NOT A SYMBOL".into(),
                ..grpc_market_order()
            },
            "symbol",
        ),
        (
            proto::CreateOrderRequest {
                quantity: 0,
                ..grpc_market_order()
            },
            "quantity",
        ),
        (
            proto::CreateOrderRequest {
                quantity: -3,
                ..grpc_market_order()
            },
            "quantity",
        ),
        (limit("AAPL", 0.0), "price"),
        (limit("AAPL", -1.0), "price"),
        (limit("AAPL", f64::NAN), "price"),
        (
            proto::CreateOrderRequest {
                price: 10.0,
                ..grpc_market_order()
            },
            "price",
        ),
        (
            proto::CreateOrderRequest {
                order_type: 0,
                ..grpc_market_order()
            },
            "order_type",
        ),
        (
            proto::CreateOrderRequest {
                order_type: 7,
                ..grpc_market_order()
            },
            "order_type",
        ),
        (
            proto::CreateOrderRequest {
                order_side: 3,
                ..grpc_market_order()
            },
            "order_side",
        ),
        (
            proto::CreateOrderRequest {
                client_order_id: "has space".into(),
                ..grpc_market_order()
            },
            "client_order_id",
        ),
    ];
    for (request, field) in creates {
        let status = grpc.create_order(request.clone()).await.unwrap_err();
        assert_eq!(status.code(), Code::InvalidArgument, "{request:?}: {status:?}");
        assert!(
            status.message().starts_with(field),
            "{request:?}: message {:?} should name {field}",
            status.message()
        );
    }

    for bad_id in ["", "nope", "01a21143-0673-7066-bc07"] {
        let status = grpc.get_order(get(bad_id)).await.unwrap_err();
        assert_eq!(status.code(), Code::InvalidArgument, "{bad_id:?}");
        assert!(status.message().starts_with("order_id"), "{}", status.message());
        let status = grpc.cancel_order(cancel(bad_id)).await.unwrap_err();
        assert_eq!(status.code(), Code::InvalidArgument, "{bad_id:?}");
    }

    let lists = [
        (
            proto::ListOrdersRequest {
                page_size: 1001,
                ..Default::default()
            },
            "page_size",
        ),
        (
            proto::ListOrdersRequest {
                page_size: -1,
                ..Default::default()
            },
            "page_size",
        ),
        (
            proto::ListOrdersRequest {
                page_token: "not-a-token".into(),
                ..Default::default()
            },
            "page_token",
        ),
        (
            proto::ListOrdersRequest {
                status: 99,
                ..Default::default()
            },
            "status",
        ),
        (
            proto::ListOrdersRequest {
                side: 5,
                ..Default::default()
            },
            "side",
        ),
        (
            proto::ListOrdersRequest {
                symbol: "$$$".into(),
                ..Default::default()
            },
            "symbol",
        ),
    ];
    for (request, field) in lists {
        let status = grpc.list_orders(request.clone()).await.unwrap_err();
        assert_eq!(status.code(), Code::InvalidArgument, "{request:?}");
        assert!(status.message().starts_with(field), "{}", status.message());
    }

    // Still serving after all that.
    assert!(grpc.create_order(grpc_market_order()).await.is_ok());
    app.stop().await;
}

#[tokio::test]
async fn pages_and_filters() {
    let app = spawn_app().await;
    let mut grpc = client(&app).await;
    let mut made = Vec::new();
    for i in 0..5 {
        let request = if i % 2 == 0 {
            grpc_market_order()
        } else {
            limit("MSFT", 10.0 + i as f64)
        };
        made.push(grpc.create_order(request).await.unwrap().into_inner().id);
    }
    made.reverse(); // newest first

    let mut seen = Vec::new();
    let mut token = String::new();
    loop {
        let page = grpc
            .list_orders(proto::ListOrdersRequest {
                page_size: 2,
                page_token: token.clone(),
                ..Default::default()
            })
            .await
            .unwrap()
            .into_inner();
        assert!(page.orders.len() <= 2);
        seen.extend(page.orders.into_iter().map(|o| o.id));
        if page.next_page_token.is_empty() {
            break;
        }
        token = page.next_page_token;
    }
    assert_eq!(seen, made);

    let sells = grpc
        .list_orders(proto::ListOrdersRequest {
            side: proto::OrderSide::Sell.into(),
            symbol: "msft".into(),
            status: proto::OrderStatus::Pending.into(),
            ..Default::default()
        })
        .await
        .unwrap()
        .into_inner();
    assert_eq!(sells.orders.len(), 2);
    assert!(sells.orders.iter().all(|o| o.symbol == "MSFT"));
    let filled = grpc
        .list_orders(proto::ListOrdersRequest {
            status: proto::OrderStatus::Filled.into(),
            ..Default::default()
        })
        .await
        .unwrap();
    assert!(filled.into_inner().orders.is_empty());
    app.stop().await;
}

#[tokio::test]
async fn health_reports_serving_per_service() {
    use tonic_health::pb::HealthCheckRequest;
    use tonic_health::pb::health_check_response::ServingStatus;
    use tonic_health::pb::health_client::HealthClient;

    let app = spawn_app().await;
    let mut health = HealthClient::new(channel(&app).await);
    for service in ["", "stockorder.StockOrderService"] {
        let answer = health
            .check(HealthCheckRequest {
                service: service.into(),
            })
            .await
            .unwrap()
            .into_inner();
        assert_eq!(answer.status(), ServingStatus::Serving, "{service:?}");
    }
    let unknown = health
        .check(HealthCheckRequest {
            service: "no.such.Service".into(),
        })
        .await
        .unwrap_err();
    assert_eq!(unknown.code(), Code::NotFound);
    app.stop().await;
}

/// Reflection, with nothing but the reflection API on the client side: list the services, then
/// resolve `stockorder.StockOrderService` to its file and read its methods from there.
#[tokio::test]
async fn reflection_lists_and_resolves_the_service() {
    use prost::Message;
    use tonic_reflection::pb::v1::ServerReflectionRequest;
    use tonic_reflection::pb::v1::server_reflection_client::ServerReflectionClient;
    use tonic_reflection::pb::v1::server_reflection_request::MessageRequest;
    use tonic_reflection::pb::v1::server_reflection_response::MessageResponse;

    let app = spawn_app().await;
    let mut reflection = ServerReflectionClient::new(channel(&app).await);
    let ask = |request: MessageRequest| ServerReflectionRequest {
        host: String::new(),
        message_request: Some(request),
    };
    let mut answers = reflection
        .server_reflection_info(tokio_stream::iter([
            ask(MessageRequest::ListServices(String::new())),
            ask(MessageRequest::FileContainingSymbol(
                "stockorder.StockOrderService".into(),
            )),
            ask(MessageRequest::FileByFilename("google/protobuf/timestamp.proto".into())),
        ]))
        .await
        .unwrap()
        .into_inner();

    let Some(MessageResponse::ListServicesResponse(list)) = answers.message().await.unwrap().unwrap().message_response
    else {
        panic!("expected a service list")
    };
    let names: Vec<&str> = list.service.iter().map(|s| s.name.as_str()).collect();
    for expected in ["stockorder.StockOrderService", "grpc.health.v1.Health"] {
        assert!(names.contains(&expected), "{expected} missing from {names:?}");
    }

    let mut files = Vec::new();
    for _ in 0..2 {
        let Some(MessageResponse::FileDescriptorResponse(found)) =
            answers.message().await.unwrap().unwrap().message_response
        else {
            panic!("expected file descriptors")
        };
        files.extend(
            found
                .file_descriptor_proto
                .iter()
                .map(|bytes| prost_types::FileDescriptorProto::decode(bytes.as_slice()).unwrap()),
        );
    }
    let ours = files
        .iter()
        .find(|f| f.package() == "stockorder")
        .expect("stock_order.proto");
    assert_eq!(ours.dependency, ["google/protobuf/timestamp.proto"]);
    let service = &ours.service[0];
    assert_eq!(service.name(), "StockOrderService");
    let methods: Vec<&str> = service.method.iter().map(|m| m.name()).collect();
    assert_eq!(
        methods,
        ["CreateOrder", "GetOrder", "ListOrders", "CancelOrder", "WatchOrders"]
    );
    assert!(
        files
            .iter()
            .any(|f| f.message_type.iter().any(|m| m.name() == "Timestamp")),
        "imports are served, so a client can resolve Timestamp too"
    );
    app.stop().await;
}

/// A client generated from the original proto knows field numbers 1–10 only. Its messages are
/// declared here by hand with exactly those numbers, and must work unchanged.
mod original_proto {
    #[derive(Clone, PartialEq, prost::Message)]
    pub struct CreateOrderRequest {
        #[prost(string, tag = "1")]
        pub symbol: String,
        #[prost(int32, tag = "2")]
        pub order_type: i32,
        #[prost(int32, tag = "3")]
        pub order_side: i32,
        #[prost(int32, tag = "4")]
        pub quantity: i32,
        #[prost(double, tag = "5")]
        pub price: f64,
    }

    #[derive(Clone, PartialEq, prost::Message)]
    pub struct StockOrder {
        #[prost(string, tag = "1")]
        pub id: String,
        #[prost(string, tag = "2")]
        pub symbol: String,
        #[prost(int32, tag = "3")]
        pub order_type: i32,
        #[prost(int32, tag = "4")]
        pub order_side: i32,
        #[prost(int32, tag = "5")]
        pub quantity: i32,
        #[prost(double, tag = "6")]
        pub price: f64,
        #[prost(int32, tag = "7")]
        pub status: i32,
        #[prost(message, optional, tag = "8")]
        pub created_at: Option<prost_types::Timestamp>,
        #[prost(message, optional, tag = "9")]
        pub updated_at: Option<prost_types::Timestamp>,
        #[prost(string, tag = "10")]
        pub description: String,
    }

    #[derive(Clone, PartialEq, prost::Message)]
    pub struct ListOrdersRequest {}

    #[derive(Clone, PartialEq, prost::Message)]
    pub struct ListOrdersResponse {
        #[prost(message, repeated, tag = "1")]
        pub orders: Vec<StockOrder>,
    }
}

#[tokio::test]
async fn a_client_of_the_original_proto_works_unchanged() {
    use tonic::codegen::http::uri::PathAndQuery;

    let app = spawn_app().await;
    let mut grpc = tonic::client::Grpc::new(channel(&app).await);
    grpc.ready().await.unwrap();
    let created: original_proto::StockOrder = grpc
        .unary(
            tonic::Request::new(original_proto::CreateOrderRequest {
                symbol: "TSLA".into(),
                order_type: 2, // LIMIT
                order_side: 2, // SELL
                quantity: 5,
                price: 250.5,
            }),
            PathAndQuery::from_static("/stockorder.StockOrderService/CreateOrder"),
            tonic_prost::ProstCodec::default(),
        )
        .await
        .unwrap()
        .into_inner();
    assert_eq!(
        (
            created.symbol.as_str(),
            created.order_type,
            created.order_side,
            created.quantity
        ),
        ("TSLA", 2, 2, 5)
    );
    assert_eq!((created.price, created.status), (250.5, 1), "PENDING = 1");
    assert!(created.created_at.is_some() && created.updated_at.is_some());

    grpc.ready().await.unwrap();
    let listed: original_proto::ListOrdersResponse = grpc
        .unary(
            tonic::Request::new(original_proto::ListOrdersRequest {}),
            PathAndQuery::from_static("/stockorder.StockOrderService/ListOrders"),
            tonic_prost::ProstCodec::default(),
        )
        .await
        .unwrap()
        .into_inner();
    assert_eq!(listed.orders, [created]);
    app.stop().await;
}
