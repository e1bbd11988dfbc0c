//! Domain errors as gRPC statuses (DESIGN §4): each cause gets its code, and a client mistake is
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
            OrderError::Unavailable => Status::unavailable(e.to_string()),
            OrderError::Internal(source) => {
                tracing::error!(error = %source, "order operation failed");
                // The cause stays in the log: storage details are not the client's business.
                Status::internal(e.to_string())
            }
        }
    }
}
