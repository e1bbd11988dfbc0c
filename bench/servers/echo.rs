//! The baseline the benchmarks compare against: a bare axum server that does no work.
//!
//! `POST /api/orders` echoes the JSON body back (parsed and re-serialised, as a real handler
//! would), and `GET /api/orders/{id}` answers a small JSON object with the id. The service's
//! figures are reported as a ratio of these, measured in the same run on the same machine.
//!
//! Run: `cargo run --release -p stockorder-bench --bin echo -- 127.0.0.1:9000`

use axum::extract::Path;
use axum::routing::{get, post};
use axum::{Json, Router};
use serde_json::{Value, json};

#[tokio::main]
async fn main() -> std::io::Result<()> {
    let addr = std::env::args().nth(1).unwrap_or_else(|| "127.0.0.1:9000".into());
    let app = Router::new()
        .route("/api/orders", post(|Json(body): Json<Value>| async move { Json(body) }))
        .route(
            "/api/orders/{id}",
            get(|Path(id): Path<String>| async move { Json(json!({ "id": id })) }),
        );
    let listener = tokio::net::TcpListener::bind(&addr).await?;
    println!("echo listening on {}", listener.local_addr()?);
    axum::serve(listener, app).await
}
