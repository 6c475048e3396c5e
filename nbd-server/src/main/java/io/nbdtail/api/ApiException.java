package io.nbdtail.api;

/** An API error: an HTTP status, a stable error code and a message that says what to do. */
public final class ApiException extends Exception {
    private static final long serialVersionUID = 1L;

    private final int status;
    private final String code;

    public ApiException(final int status, final String code, final String message) {
        super(message, null, false, false);
        this.status = status;
        this.code = code;
    }

    public int status() {
        return status;
    }

    public String code() {
        return code;
    }
}
