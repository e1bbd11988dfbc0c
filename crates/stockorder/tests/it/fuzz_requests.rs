//! Property tests (proptest) of request parsing and validation, through the real router over a
//! real SQLite store: whatever bytes, fields, ids or query strings a client sends, the answer is
//! a documented 2xx/4xx with a JSON body, never a 5xx or a panic, and an order is accepted
//! exactly when the rules of the REST contract (docs/api.md) say it is valid.

use std::sync::Arc;

use axum::Router;
use axum::body::Body;
use axum::http::{Request, StatusCode};
use proptest::prelude::*;
use serde_json::{Value, json};
use stockorder::adapter::inbound::http;
use stockorder::adapter::outbound::simulated_price::SimulatedPrices;
use stockorder::adapter::outbound::store::Store;
use stockorder::config::DatabaseUrl;
use stockorder::domain::RiskRules;
use stockorder::service::OrderDesk;
use tower::ServiceExt;

/// A router over a fresh database, and the runtime that drives it.
struct Harness {
    runtime: tokio::runtime::Runtime,
    router: Router,
    _dir: tempfile::TempDir,
}

impl Harness {
    fn new() -> Self {
        let runtime = tokio::runtime::Builder::new_multi_thread()
            .worker_threads(1)
            .enable_all()
            .build()
            .unwrap();
        let dir = tempfile::tempdir().unwrap();
        let url = DatabaseUrl::parse(&format!("sqlite://{}", dir.path().join("f.db").display())).unwrap();
        let router = runtime.block_on(async {
            let store = Store::open(
                &url,
                2,
                Default::default(),
                Default::default(),
                None,
                std::sync::Arc::new(stockorder::port::NoMetrics),
            )
            .await
            .unwrap();
            let desk = Arc::new(OrderDesk::new(store, Arc::new(SimulatedPrices), RiskRules::default()));
            http::router(desk, phased_shutdown::DrainSwitch::new().readiness())
        });
        Self {
            runtime,
            router,
            _dir: dir,
        }
    }

    /// Sends one request; returns the status and the body parsed as JSON.
    fn send(&self, request: Request<Body>) -> (StatusCode, Value) {
        self.runtime.block_on(async {
            let response = self.router.clone().oneshot(request).await.unwrap();
            let status = response.status();
            let bytes = axum::body::to_bytes(response.into_body(), usize::MAX).await.unwrap();
            let body = serde_json::from_slice(&bytes)
                .unwrap_or_else(|e| panic!("{status}: body is not JSON ({e}): {}", String::from_utf8_lossy(&bytes)));
            (status, body)
        })
    }

    fn post(&self, body: impl Into<Body>) -> (StatusCode, Value) {
        self.send(
            Request::post("/api/orders")
                .header("content-type", "application/json")
                .body(body.into())
                .unwrap(),
        )
    }
}

/// A 4xx answer says what was wrong in `{"error": "…"}`.
fn assert_client_error(status: StatusCode, body: &Value) {
    assert!(status.is_client_error(), "{status} {body}");
    assert!(body["error"].as_str().is_some_and(|e| !e.is_empty()), "{body}");
}

fn field_value() -> impl Strategy<Value = Value> {
    prop_oneof![
        Just(Value::Null),
        any::<bool>().prop_map(Value::from),
        any::<i64>().prop_map(Value::from),
        any::<f64>()
            .prop_filter("JSON numbers are finite", |f| f.is_finite())
            .prop_map(Value::from),
        ".{0,20}".prop_map(Value::from),
        Just(json!([])),
        Just(json!({})),
    ]
}

/// Whether `value` has a JSON type field `name` can be read as (before any rule applies):
/// strings for the text fields, a whole number for the quantity (`100.0` counts), any number
/// for the price; `null` means absent.
fn readable(name: &str, value: &Value) -> bool {
    match (name, value) {
        (_, Value::Null) => true,
        ("quantity", Value::Number(n)) => {
            n.as_i64().is_some() || n.as_f64().is_some_and(|f| f.fract() == 0.0 && f.abs() <= 2f64.powi(53))
        }
        ("quantity", _) => false,
        ("price", v) => v.is_number(),
        (_, v) => v.is_string(),
    }
}

/// What the rules say about an order: the field named by the answer, or `None` when it is
/// valid. Reading stops at the first field (in the document's order) of the wrong type; then
/// validation checks symbol, order_type, order_side, quantity, client_order_id, price.
fn expected_failure(o: &Value) -> Option<&'static str> {
    for (name, value) in o.as_object().into_iter().flatten() {
        if !readable(name, value) {
            return [
                "symbol",
                "order_type",
                "order_side",
                "quantity",
                "price",
                "client_order_id",
            ]
            .into_iter()
            .find(|f| f == name);
        }
    }
    let symbol = o["symbol"].as_str().map(str::trim).unwrap_or("");
    let symbol_ok = (1..=12).contains(&symbol.len())
        && symbol
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || c == '.' || c == '-');
    let variant = |field: &str, names: [&'static str; 2]| -> Option<&'static str> {
        o[field]
            .as_str()
            .and_then(|v| names.iter().find(|n| n.eq_ignore_ascii_case(v)).copied())
    };
    let order_type = variant("order_type", ["MARKET", "LIMIT"]);
    let quantity_ok = o["quantity"]
        .as_i64()
        .is_some_and(|q| (1..=i64::from(i32::MAX)).contains(&q));
    let key_ok = match &o["client_order_id"] {
        Value::Null => true,
        Value::String(k) => (1..=64).contains(&k.len()) && k.bytes().all(|b| b.is_ascii_graphic()),
        _ => false,
    };
    let price = &o["price"];
    let price_ok = match order_type {
        Some("LIMIT") => price.as_f64().is_some_and(|p| p > 0.0),
        _ => price.is_null() || price.as_f64() == Some(0.0),
    };
    if !symbol_ok {
        Some("symbol")
    } else if order_type.is_none() {
        Some("order_type")
    } else if variant("order_side", ["BUY", "SELL"]).is_none() {
        Some("order_side")
    } else if !quantity_ok {
        Some("quantity")
    } else if !key_ok {
        Some("client_order_id")
    } else if !price_ok {
        Some("price")
    } else {
        None
    }
}

fn order() -> impl Strategy<Value = Value> {
    let symbol = prop_oneof![
        "[A-Za-z0-9.-]{1,12}".prop_map(Value::from),
        " ?[a-z]{1,4} ?".prop_map(Value::from),
        field_value(),
    ];
    let order_type = prop_oneof![
        Just(json!("MARKET")),
        Just(json!("limit")),
        Just(json!("Limit")),
        field_value()
    ];
    let side = prop_oneof![Just(json!("BUY")), Just(json!("sell")), field_value()];
    let quantity = prop_oneof![(1i64..=1000).prop_map(Value::from), field_value()];
    let price = prop_oneof![
        Just(Value::Null),
        Just(json!(0)),
        (0.01f64..1e6).prop_map(Value::from),
        field_value()
    ];
    let key = prop_oneof![Just(Value::Null), "[!-~]{1,64}".prop_map(Value::from), field_value()];
    (symbol, order_type, side, quantity, price, key).prop_map(|(s, t, d, q, p, k)| {
        let mut o = json!({"symbol": s, "order_type": t, "order_side": d, "quantity": q});
        if !p.is_null() {
            o["price"] = p;
        }
        if !k.is_null() {
            o["client_order_id"] = k;
        }
        o
    })
}

/// Found by the property below: a quantity one ULP from a whole number. serde_json's default
/// float parsing may round to the nearest ULP, which made `-1913826122900223.8` (not whole) read
/// as a whole number; with `float_roundtrip` it parses exactly, and is refused as a quantity.
#[test]
fn a_quantity_one_ulp_from_whole_is_not_whole() {
    let h = Harness::new();
    let body = r#"{"symbol":"a","order_type":"MARKET","order_side":null,"quantity":-1913826122900223.8}"#;
    let (status, answer) = h.post(body.to_owned());
    assert_eq!(status, StatusCode::BAD_REQUEST, "{answer}");
    let message = answer["error"].as_str().unwrap_or_default();
    assert!(message.contains("quantity"), "{message}");
}

proptest! {
    #![proptest_config(ProptestConfig {
        cases: 256,
        // The failing input is printed; the regression file would sit beside a test binary.
        failure_persistence: None,
        ..ProptestConfig::default()
    })]

    #[test]
    fn any_body_gets_a_json_answer_and_never_a_server_error(body in proptest::collection::vec(any::<u8>(), 0..512)) {
        let h = Harness::new();
        let (status, answer) = h.post(body);
        prop_assert!(status == StatusCode::CREATED || status.is_client_error(), "{status} {answer}");
        if status.is_client_error() {
            assert_client_error(status, &answer);
        }
    }

    #[test]
    fn an_order_is_accepted_exactly_when_the_rules_say_so(order in order()) {
        let h = Harness::new();
        let (status, answer) = h.post(order.to_string());
        match expected_failure(&order) {
            None => prop_assert_eq!(status, StatusCode::CREATED, "{} -> {}", order, answer),
            Some(field) => {
                assert_client_error(status, &answer);
                prop_assert_eq!(status, StatusCode::BAD_REQUEST);
                let message = answer["error"].as_str().unwrap_or_default();
                prop_assert!(message.contains(field), "{} -> {} (expected {})", order, message, field);
            }
        }
    }

    #[test]
    fn any_id_or_query_gets_a_json_answer_and_never_a_server_error(
        id in "[^/?#]{1,40}",
        query in "[a-z_]{1,10}=[^&#]{0,40}(&[a-z_]{1,10}=[^&#]{0,40}){0,3}",
    ) {
        let h = Harness::new();
        let id = urlencode(&id);
        for (method, uri) in [
            ("GET", format!("/api/orders/{id}")),
            ("POST", format!("/api/orders/{id}/cancel")),
            ("GET", format!("/api/orders?{}", urlencode_query(&query))),
        ] {
            let (status, answer) = h.send(Request::builder().method(method).uri(&uri).body(Body::empty()).unwrap());
            prop_assert!(status == StatusCode::OK || status.is_client_error(), "{method} {uri}: {status} {answer}");
            if status.is_client_error() {
                assert_client_error(status, &answer);
            }
        }
    }
}

/// Percent-encodes everything but unreserved characters (RFC 3986 §2.3).
fn urlencode(raw: &str) -> String {
    raw.bytes()
        .map(|b| match b {
            b'A'..=b'Z' | b'a'..=b'z' | b'0'..=b'9' | b'-' | b'.' | b'_' | b'~' => (b as char).to_string(),
            _ => format!("%{b:02X}"),
        })
        .collect()
}

/// Encodes each name and value of `a=b&c=d`, keeping the separators.
fn urlencode_query(raw: &str) -> String {
    raw.split('&')
        .map(|pair| {
            let (k, v) = pair.split_once('=').unwrap_or((pair, ""));
            format!("{}={}", urlencode(k), urlencode(v))
        })
        .collect::<Vec<_>>()
        .join("&")
}
