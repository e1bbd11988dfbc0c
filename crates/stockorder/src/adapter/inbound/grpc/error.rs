//! Domain errors as gRPC statuses (docs/api.md): each cause gets its code, and a client mistake is
//! never INTERNAL.

use tonic::Status;

use crate::domain::ValidationError;
use crate::port::OrderError;

impl From<ValidationError> for Status {
    /// INVALID_ARGUMENT with the field first in the message (`quantity must be …`).
    fn from(e: ValidationError) -> Self {
        Status::invalid_argument(e.to_string())
    }
}

impl From<OrderError> for Status {
    fn from(e: OrderError) -> Self {
        match &e {
            OrderError::NotFound(_) => Status::not_found(e.to_string()),
            OrderError::NotCancellable { .. } => Status::failed_precondition(e.to_string()),
            OrderError::ClientOrderIdReused(_) => Status::already_exists(e.to_string()),
            OrderError::EventsPruned { .. } => Status::out_of_range(e.to_string()),
            OrderError::Unavailable | OrderError::StorageUnavailable(_) => Status::unavailable(e.to_string()),
            // "may have completed": what DEADLINE_EXCEEDED means for a call that changes state.
            OrderError::OutcomeUnknown => Status::deadline_exceeded(e.to_string()),
            OrderError::Internal(source) => {
                tracing::error!(error = %source, "order operation failed");
                // The cause stays in the log: storage details are not the client's business.
                Status::internal(e.to_string())
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use tonic::Code;

    use super::*;
    use crate::domain::{OrderId, OrderStatus};
    use crate::port::RepositoryError;

    #[test]
    fn each_cause_has_its_code() {
        let id = OrderId::generate();
        let cases = [
            (OrderError::NotFound(id), Code::NotFound),
            (
                OrderError::NotCancellable {
                    id,
                    status: OrderStatus::Filled,
                },
                Code::FailedPrecondition,
            ),
            (OrderError::ClientOrderIdReused("k".into()), Code::AlreadyExists),
            (OrderError::Unavailable, Code::Unavailable),
            (OrderError::from(RepositoryError::Closed), Code::Unavailable),
            (
                OrderError::from(RepositoryError::Unavailable {
                    fault: crate::port::Fault::Full,
                    source: "disk full".into(),
                }),
                Code::Unavailable,
            ),
            (
                OrderError::from(RepositoryError::OutcomeUnknown("connection reset".into())),
                Code::DeadlineExceeded,
            ),
            (
                OrderError::Internal(RepositoryError::Unreadable("bad row".into())),
                Code::Internal,
            ),
        ];
        for (error, code) in cases {
            assert_eq!(Status::from(error).code(), code);
        }
        let internal = Status::from(OrderError::Internal(RepositoryError::Corrupt("secret path".into())));
        assert!(
            !internal.message().contains("secret"),
            "storage details stay in the log"
        );
        let invalid = Status::from(ValidationError::new("quantity", "must be positive"));
        assert_eq!(invalid.code(), Code::InvalidArgument);
        assert_eq!(invalid.message(), "quantity must be positive");
    }
}
