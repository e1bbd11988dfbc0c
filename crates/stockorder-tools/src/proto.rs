//! The service's gRPC API as a client sees it: generated at build time from
//! `proto/stock_order.proto`, the file the server is generated from too.

#![allow(missing_docs)] // generated code

tonic::include_proto!("stockorder");
