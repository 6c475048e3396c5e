package io.nbdtail.tools.online;

import com.fasterxml.jackson.core.JsonProcessingException;
import com.fasterxml.jackson.databind.JsonNode;
import com.fasterxml.jackson.databind.ObjectMapper;
import com.fasterxml.jackson.databind.node.MissingNode;
import com.fasterxml.jackson.databind.node.ObjectNode;

import javax.net.ssl.SSLException;
import java.io.IOException;
import java.io.InterruptedIOException;
import java.net.ConnectException;
import java.net.URI;
import java.net.URISyntaxException;
import java.net.URLEncoder;
import java.net.http.HttpClient;
import java.net.http.HttpConnectTimeoutException;
import java.net.http.HttpRequest;
import java.net.http.HttpResponse;
import java.net.http.HttpTimeoutException;
import java.nio.channels.UnresolvedAddressException;
import java.nio.charset.StandardCharsets;
import java.time.Duration;
import java.util.Locale;

/**
 * A client of the nbdtail control API ({@code docs/api/openapi.yaml}): HTTP/1.1 and JSON with a bearer token.
 * Every call returns the answer's JSON ({@link MissingNode} for an empty answer such as 204), or throws an
 * {@link ApiException} that says what was wrong: the server's error for a non-2xx answer, or why it could not
 * be reached.
 */
public final class ApiClient implements AutoCloseable {
    /** How long to wait for the TCP (and TLS) connection. */
    static final Duration CONNECT_TIMEOUT = Duration.ofSeconds(5);
    /** How long to wait for an answer; long work runs as an operation, so every call answers at once. */
    static final Duration REQUEST_TIMEOUT = Duration.ofSeconds(60);

    private static final ObjectMapper JSON = new ObjectMapper();
    /** How much of a body that is not the API's JSON to quote in a message. */
    private static final int QUOTE = 200;

    private final String baseUrl;
    private final String token;
    private final HttpClient http;

    /**
     * @param baseUrl {@code http://HOST:PORT} or {@code https://HOST:PORT}, without a trailing slash.
     * @param token the bearer token.
     */
    public ApiClient(final String baseUrl, final String token) {
        this.baseUrl = baseUrl.endsWith("/") ? baseUrl.substring(0, baseUrl.length() - 1) : baseUrl;
        this.token = token;
        this.http = HttpClient.newBuilder().version(HttpClient.Version.HTTP_1_1).connectTimeout(CONNECT_TIMEOUT)
            .followRedirects(HttpClient.Redirect.NEVER).build();
    }

    /** The server's base URL, as messages name it. */
    public String baseUrl() {
        return baseUrl;
    }

    public JsonNode get(final String path) throws ApiException {
        return send("GET", path, null);
    }

    public JsonNode post(final String path, final JsonNode body) throws ApiException {
        return send("POST", path, body);
    }

    public JsonNode put(final String path, final JsonNode body) throws ApiException {
        return send("PUT", path, body);
    }

    public JsonNode delete(final String path) throws ApiException {
        return send("DELETE", path, null);
    }

    /** {@code value} percent-encoded for use as one path segment ({@code /v1/volumes/SEGMENT}). */
    public static String segment(final String value) {
        return URLEncoder.encode(value, StandardCharsets.UTF_8).replace("+", "%20");
    }

    /** A new, empty JSON object for request bodies. */
    public static ObjectNode object() {
        return JSON.createObjectNode();
    }

    private JsonNode send(final String method, final String path, final JsonNode body) throws ApiException {
        final URI uri;
        try {
            uri = new URI(baseUrl + path);
        } catch (final URISyntaxException e) {
            throw new ApiException(ApiException.NO_ANSWER, "invalid_url", "invalid API URL '" + baseUrl + path
                + "': " + e.getReason() + "; check --server", e);
        }
        final HttpRequest.Builder request = HttpRequest.newBuilder(uri).timeout(REQUEST_TIMEOUT)
            .header("Authorization", "Bearer " + token).header("Accept", "application/json");
        if (body != null) {
            final byte[] bytes;
            try {
                bytes = JSON.writeValueAsBytes(body);
            } catch (final JsonProcessingException e) {
                throw new IllegalStateException("cannot write a request body", e);
            }
            request.header("Content-Type", "application/json")
                .method(method, HttpRequest.BodyPublishers.ofByteArray(bytes));
        } else {
            request.method(method, HttpRequest.BodyPublishers.noBody());
        }
        final HttpResponse<String> response;
        try {
            response = http.send(request.build(), HttpResponse.BodyHandlers.ofString(StandardCharsets.UTF_8));
        } catch (final InterruptedException e) {
            Thread.currentThread().interrupt();
            throw new ApiException(ApiException.NO_ANSWER, "interrupted", "interrupted while waiting for " + method
                + " " + path + " at " + baseUrl + "; the request may still take effect on the server", e);
        } catch (final IOException e) {
            throw transportFailure(method, path, e);
        }
        return answer(method, path, response);
    }

    /** The JSON of a 2xx answer, or the API's error as an exception. */
    private JsonNode answer(final String method, final String path, final HttpResponse<String> response)
        throws ApiException {
        final int status = response.statusCode();
        final String text = response.body() == null ? "" : response.body();
        JsonNode json = null;
        if (!text.isBlank()) {
            try {
                json = JSON.readTree(text);
            } catch (final JsonProcessingException e) {
                json = null;
            }
        }
        if (status >= 200 && status < 300) {
            if (text.isBlank()) {
                return MissingNode.getInstance();
            }
            if (json == null) {
                throw new ApiException(status, "not_json", "the server at " + baseUrl + " answered " + method + " "
                    + path + " with something that is not JSON (" + quote(text) + "); check that --server is the"
                    + " nbdtail control API's address (--api-listen, default port 10810)");
            }
            return json;
        }
        if (json != null && json.path("error").isTextual() && json.path("message").isTextual()) {
            final String message = json.get("message").asText();
            final ApiException e = new ApiException(status, json.get("error").asText(), message);
            if (status == 401) {
                throw e.withHint("check --token or --token-file ($NBDTAIL_TOKEN, $NBDTAIL_TOKEN_FILE): the"
                    + " server's token is in DATA/api-token unless it runs with --api-token-file");
            }
            throw e;
        }
        final String what = "the server at " + baseUrl + " answered " + method + " " + path + " with HTTP " + status
            + (text.isBlank() ? "" : " (" + quote(text) + ")");
        if (status == 401) {
            throw new ApiException(status, "unauthorized", what + "; check the token: --token, --token-file,"
                + " $NBDTAIL_TOKEN or $NBDTAIL_TOKEN_FILE");
        }
        throw new ApiException(status, "http_" + status, what + "; check that --server is the nbdtail control API's"
            + " address and see the server log");
    }

    private ApiException transportFailure(final String method, final String path, final IOException e) {
        if (e instanceof HttpConnectTimeoutException) {
            return unreachable("no connection within " + CONNECT_TIMEOUT.toSeconds() + " s", e);
        }
        if (e instanceof HttpTimeoutException) {
            return new ApiException(ApiException.NO_ANSWER, "timeout", "the nbdtail API at " + baseUrl + " did not"
                + " answer " + method + " " + path + " within " + REQUEST_TIMEOUT.toSeconds() + " s"
                + ("GET".equals(method) ? "" : " (the request may still take effect)") + "; check the server's health"
                + " and log, then retry", e);
        }
        if (e instanceof ConnectException || hasCause(e, UnresolvedAddressException.class)) {
            return unreachable(reason(e), e);
        }
        if (e instanceof SSLException) {
            return new ApiException(ApiException.NO_ANSWER, "tls", "TLS with the nbdtail API at " + baseUrl
                + " failed: " + reason(e) + "; use http:// for a server without TLS, or make the JVM trust the"
                + " server's certificate (-Djavax.net.ssl.trustStore=FILE in JAVA_TOOL_OPTIONS)", e);
        }
        if (e instanceof InterruptedIOException) {
            return new ApiException(ApiException.NO_ANSWER, "interrupted", "interrupted while waiting for " + method
                + " " + path + " at " + baseUrl + "; the request may still take effect on the server", e);
        }
        return new ApiException(ApiException.NO_ANSWER, "protocol", "cannot talk to the nbdtail API at " + baseUrl
            + ": " + reason(e) + "; check that --server is the control API's address (--api-listen, default port"
            + " 10810, not the NBD port) and its scheme (https:// if the API uses TLS)", e);
    }

    private ApiException unreachable(final String reason, final IOException e) {
        return new ApiException(ApiException.NO_ANSWER, "unreachable", "cannot reach the nbdtail API at " + baseUrl
            + ": " + reason + "; is the server running with --api-listen?", e);
    }

    /** The first message along the cause chain; the JDK's ConnectException often has none. */
    private static String reason(final Throwable e) {
        for (Throwable t = e; t != null; t = t.getCause()) {
            if (t instanceof UnresolvedAddressException) {
                return "unknown host";
            }
            if (t.getMessage() != null && !t.getMessage().isBlank()) {
                final String m = t.getMessage();
                return t instanceof ConnectException ? m.toLowerCase(Locale.ROOT) : m;
            }
        }
        return e instanceof ConnectException ? "connection refused" : e.getClass().getSimpleName();
    }

    private static boolean hasCause(final Throwable e, final Class<? extends Throwable> type) {
        for (Throwable t = e; t != null; t = t.getCause()) {
            if (type.isInstance(t)) {
                return true;
            }
        }
        return false;
    }

    private static String quote(final String text) {
        final String line = text.strip().replaceAll("\\s+", " ");
        return line.length() <= QUOTE ? line : line.substring(0, QUOTE) + "...";
    }

    @Override
    public void close() {
        http.close();
    }
}
