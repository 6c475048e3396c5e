package io.nbdtail.tools.online;

import java.io.IOException;

/**
 * A control API call that failed: the server answered with an error ({@link #status} 400-599, {@link #error}
 * the API's code such as {@code volume_not_found}), or it could not be reached at all ({@link #status} 0).
 * The message says what was wrong and what to do; the command line prints it as it is.
 *
 * <p>An {@link IOException}, so that the command line's failure handler treats it as an expected failure
 * (exit code 1, one line on stderr).
 */
public final class ApiException extends IOException {
    /** {@link #status} of a call that got no HTTP answer (connection refused, timeout, TLS failure). */
    public static final int NO_ANSWER = 0;

    private static final long serialVersionUID = 1L;

    private final int status;
    private final String error;

    public ApiException(final int status, final String error, final String message) {
        super(message);
        this.status = status;
        this.error = error;
    }

    public ApiException(final int status, final String error, final String message, final Throwable cause) {
        super(message, cause);
        this.status = status;
        this.error = error;
    }

    /** The HTTP status, or {@link #NO_ANSWER}. */
    public int status() {
        return status;
    }

    /** The API's error code ({@code volume_not_found}, ...), or {@code unreachable} without an answer. */
    public String error() {
        return error;
    }

    /** The same failure with {@code hint} added to the message (what to do from the command line). */
    ApiException withHint(final String hint) {
        return new ApiException(status, error, getMessage() + "; " + hint, this);
    }
}
