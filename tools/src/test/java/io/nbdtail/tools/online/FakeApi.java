package io.nbdtail.tools.online;

import com.sun.net.httpserver.HttpExchange;
import com.sun.net.httpserver.HttpServer;

import java.io.IOException;
import java.io.OutputStream;
import java.net.InetAddress;
import java.net.InetSocketAddress;
import java.nio.charset.StandardCharsets;
import java.util.ArrayDeque;
import java.util.Deque;
import java.util.List;
import java.util.Map;
import java.util.concurrent.ConcurrentHashMap;
import java.util.concurrent.CopyOnWriteArrayList;

/**
 * A tiny stand-in for the control API: canned JSON per {@code METHOD /path}, 401 without
 * {@code Authorization: Bearer test-token}, and a record of every request.
 */
final class FakeApi implements AutoCloseable {
    static final String TOKEN = "test-token";

    /** One request as the fake saw it. */
    record Request(String method, String path, String query, String body) {
    }

    private record Response(int status, String body) {
    }

    private final HttpServer server;
    private final Map<String, Deque<Response>> routes = new ConcurrentHashMap<>();
    private final List<Request> requests = new CopyOnWriteArrayList<>();

    FakeApi() throws IOException {
        server = HttpServer.create(new InetSocketAddress(InetAddress.getLoopbackAddress(), 0), 16);
        server.createContext("/", this::handle);
        server.start();
    }

    String url() {
        return "http://127.0.0.1:" + server.getAddress().getPort();
    }

    /**
     * Answers {@code method path} with {@code status} and {@code body}; several answers to the same request are
     * given in turn, and the last one repeats.
     */
    FakeApi on(final String method, final String path, final int status, final String body) {
        routes.computeIfAbsent(method + " " + path, k -> new ArrayDeque<>()).add(new Response(status, body));
        return this;
    }

    /** Answers {@code method path} with only {@code status} and {@code body} from now on. */
    FakeApi replace(final String method, final String path, final int status, final String body) {
        routes.remove(method + " " + path);
        return on(method, path, status, body);
    }

    List<Request> requests() {
        return requests;
    }

    /** The last request to {@code method path}. */
    Request last(final String method, final String path) {
        for (int i = requests.size() - 1; i >= 0; i--) {
            final Request r = requests.get(i);
            if (r.method().equals(method) && r.path().equals(path)) {
                return r;
            }
        }
        throw new AssertionError("no " + method + " " + path + " among " + requests);
    }

    private void handle(final HttpExchange exchange) throws IOException {
        try (exchange) {
            final String body = new String(exchange.getRequestBody().readAllBytes(), StandardCharsets.UTF_8);
            final String method = exchange.getRequestMethod();
            final String path = exchange.getRequestURI().getRawPath();
            if (!("Bearer " + TOKEN).equals(exchange.getRequestHeaders().getFirst("Authorization"))) {
                send(exchange, new Response(401, """
                    {"error": "unauthorized", "message": "missing or wrong bearer token"}"""));
                return;
            }
            requests.add(new Request(method, path, exchange.getRequestURI().getRawQuery(), body));
            final Deque<Response> answers = routes.get(method + " " + path);
            if (answers == null) {
                send(exchange, new Response(404, "{\"error\": \"not_found\", \"message\": \"no such resource: "
                    + path + "\"}"));
                return;
            }
            final Response response;
            synchronized (answers) {
                response = answers.size() > 1 ? answers.poll() : answers.peek();
            }
            send(exchange, response);
        }
    }

    private static void send(final HttpExchange exchange, final Response response) throws IOException {
        exchange.getResponseHeaders().set("Content-Type", "application/json");
        if (response.body() == null || response.body().isEmpty()) {
            exchange.sendResponseHeaders(response.status(), -1);
            return;
        }
        final byte[] bytes = response.body().getBytes(StandardCharsets.UTF_8);
        exchange.sendResponseHeaders(response.status(), bytes.length);
        try (OutputStream out = exchange.getResponseBody()) {
            out.write(bytes);
        }
    }

    @Override
    public void close() {
        server.stop(0);
    }
}
