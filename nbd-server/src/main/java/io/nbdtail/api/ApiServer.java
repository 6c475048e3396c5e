package io.nbdtail.api;

import com.fasterxml.jackson.core.JsonProcessingException;
import com.fasterxml.jackson.databind.DeserializationFeature;
import com.fasterxml.jackson.databind.ObjectMapper;
import com.fasterxml.jackson.databind.SerializationFeature;
import com.fasterxml.jackson.core.exc.InputCoercionException;
import com.fasterxml.jackson.databind.exc.InvalidFormatException;
import com.fasterxml.jackson.databind.exc.MismatchedInputException;
import com.fasterxml.jackson.databind.exc.UnrecognizedPropertyException;
import com.fasterxml.jackson.databind.node.ArrayNode;
import com.fasterxml.jackson.databind.node.ObjectNode;
import com.sun.net.httpserver.HttpExchange;
import com.sun.net.httpserver.HttpServer;
import com.sun.net.httpserver.HttpsConfigurator;
import com.sun.net.httpserver.HttpsServer;
import io.nbdtail.layer.LayeredDevice;
import io.nbdtail.nbd.codec.BufferBudget;
import io.nbdtail.nbd.engine.Export;
import io.nbdtail.nbd.engine.NbdTransmissionHandler;
import io.nbdtail.replication.MirrorJob;
import io.nbdtail.replication.MirrorRefusedException;
import io.nbdtail.server.MirrorService;
import io.nbdtail.server.NbdTail;
import io.nbdtail.server.StallWatchdog;
import io.nbdtail.server.Ownership;
import io.nbdtail.volume.Volume;
import io.nbdtail.volume.VolumeException;
import io.nbdtail.volume.VolumeInfo;
import io.nbdtail.volume.VolumeMetadata;
import org.slf4j.Logger;
import org.slf4j.LoggerFactory;

import javax.net.ssl.KeyManagerFactory;
import javax.net.ssl.SSLContext;
import java.io.IOException;
import java.io.InputStream;
import java.io.OutputStream;
import java.net.InetSocketAddress;
import java.net.URI;
import java.net.URLDecoder;
import java.nio.charset.StandardCharsets;
import java.nio.file.Files;
import java.nio.file.Path;
import java.security.KeyStore;
import java.security.MessageDigest;
import java.time.Instant;
import java.util.ArrayList;
import java.util.List;
import java.util.Map;
import java.util.concurrent.ExecutorService;
import java.util.concurrent.Executors;
import java.util.concurrent.TimeUnit;
import java.util.regex.Matcher;
import java.util.regex.Pattern;

/**
 * The control API: HTTP/1.1 and JSON on the JDK's HTTP server, one virtual thread per request, so no call
 * ever waits behind another (the old tail server's single control thread let a status call deadlock a
 * migration). Paths and bodies are documented in {@code docs/api/openapi.yaml}; a test keeps the two equal.
 */
public final class ApiServer implements AutoCloseable {
    private static final Logger LOG = LoggerFactory.getLogger(ApiServer.class);
    /** Largest request body accepted; every valid body is far smaller. */
    private static final int MAX_BODY = 64 << 10;
    /** How long after requests last waited for buffer memory the status still says {@code degraded}. */
    private static final long RECENT_TROUBLE_MILLIS = 60_000;

    @FunctionalInterface
    private interface Handler {
        Reply handle(Request request) throws Exception;
    }

    private record Route(String method, String template, Pattern pattern, Handler handler, boolean idempotent) {
    }

    /** A parsed request: path parameters, query and body. */
    private record Request(HttpExchange exchange, Matcher path, Map<String, String> query, byte[] body) {
        String param(final int group) {
            return URLDecoder.decode(path.group(group), StandardCharsets.UTF_8);
        }
    }

    /** A response: status and JSON (or text for /metrics). */
    private record Reply(int status, Object body, String contentType) {
        static Reply json(final int status, final Object body) {
            return new Reply(status, body, "application/json");
        }
    }

    private final NbdTail tail;
    private final HttpServer server;
    private final ExecutorService executor = Executors.newVirtualThreadPerTaskExecutor();
    private final ObjectMapper json;
    private final byte[] token;
    private final IdempotencyStore idempotency;
    private final Metrics metrics;
    private final List<Route> routes = new ArrayList<>();
    private volatile boolean closing;

    private ApiServer(final NbdTail tail, final HttpServer server, final String token) throws IOException {
        this.tail = tail;
        this.server = server;
        this.token = token.getBytes(StandardCharsets.UTF_8);
        this.json = io.nbdtail.volume.VolumeService.mapper().copy()
            .disable(SerializationFeature.INDENT_OUTPUT)
            .enable(DeserializationFeature.FAIL_ON_UNKNOWN_PROPERTIES)
            .enable(DeserializationFeature.FAIL_ON_NULL_FOR_PRIMITIVES)
            .disable(DeserializationFeature.FAIL_ON_MISSING_CREATOR_PROPERTIES);
        this.idempotency = new IdempotencyStore(tail.dataDir(), json);
        this.metrics = new Metrics(tail);
        route("GET", "/v1/status", this::status, false);
        route("GET", "/v1/volumes", r -> Reply.json(200, volumes()), false);
        route("POST", "/v1/volumes", this::createVolume, true);
        route("GET", "/v1/volumes/{name}", r -> Reply.json(200, volume(tail.volumes().export(r.param(1)))), false);
        route("DELETE", "/v1/volumes/{name}", this::deleteVolume, false);
        route("POST", "/v1/volumes/{name}/grow", this::growVolume, false);
        route("GET", "/v1/volumes/{name}/clients", r -> Reply.json(200, clients(tail.volumes().export(r.param(1)))),
            false);
        route("DELETE", "/v1/volumes/{name}/clients/{id}", this::disconnectClient, false);
        route("GET", "/v1/volumes/{name}/acl", r -> Reply.json(200, acl(tail.volumes().export(r.param(1)))), false);
        route("PUT", "/v1/volumes/{name}/acl", this::setAcl, false);
        route("POST", "/v1/volumes/{name}/scrub", this::scrub, true);
        route("GET", "/v1/volumes/{name}/snapshots", r -> Reply.json(200, snapshots(r.param(1))), false);
        route("POST", "/v1/volumes/{name}/snapshots", this::createSnapshot, true);
        route("GET", "/v1/volumes/{name}/snapshots/{snapshot}", r -> Reply.json(200,
            snapshot(r.param(1), r.param(2))), false);
        route("DELETE", "/v1/volumes/{name}/snapshots/{snapshot}", this::deleteSnapshot, true);
        route("POST", "/v1/volumes/{name}/snapshots/{snapshot}/rollback", this::rollback, true);
        route("POST", "/v1/volumes/{name}/snapshots/{snapshot}/clone", this::cloneSnapshot, true);
        route("POST", "/v1/volumes/{name}/receive", this::receive, true);
        route("PUT", "/v1/volumes/{name}/address", this::setAddress, false);
        route("POST", "/v1/volumes/{name}/mirror", this::startMirror, true);
        route("GET", "/v1/volumes/{name}/mirror", r -> Reply.json(200, mirrorJob(r.param(1)).status()), false);
        route("DELETE", "/v1/volumes/{name}/mirror", this::abortMirror, false);
        route("PUT", "/v1/volumes/{name}/mirror/rate", this::mirrorRate, false);
        route("POST", "/v1/volumes/{name}/mirror/resolve", this::resolveMirror, false);
        route("GET", "/v1/mirrors", r -> Reply.json(200, tail.mirrors().list()), false);
        route("GET", "/v1/operations", r -> Reply.json(200, tail.operations().list()), false);
        route("GET", "/v1/operations/{id}", r -> Reply.json(200, operation(r.param(1))), false);
        route("DELETE", "/v1/operations/{id}", r -> {
            operation(r.param(1));
            return Reply.json(200, tail.operations().cancel(r.param(1)));
        }, false);
        route("GET", "/metrics", r -> new Reply(200, metrics.render(), "text/plain; version=0.0.4; charset=utf-8"),
            false);
    }

    /** Starts the API on {@code host:port} with the configuration of {@code tail}. */
    public static ApiServer start(final NbdTail tail, final String host, final int port) throws Exception {
        final ApiConfig config = tail.config().api;
        final Path tokenFile = config.tokenFile != null ? Path.of(config.tokenFile)
            : tail.dataDir().resolve("api-token");
        final String token = TokenFile.loadOrCreate(tokenFile);
        final InetSocketAddress address = new InetSocketAddress(host, port);
        final HttpServer http;
        if (config.tls != null && config.tls.keystore != null) {
            final HttpsServer https = HttpsServer.create(address, 128);
            https.setHttpsConfigurator(new HttpsConfigurator(sslContext(config.tls)));
            http = https;
        } else {
            http = HttpServer.create(address, 128);
        }
        final ApiServer api = new ApiServer(tail, http, token);
        http.setExecutor(api.executor);
        http.createContext("/", api::handle);
        http.start();
        LOG.info("control API on {}://{} (token in {})", config.tls != null ? "https" : "http", api.address(),
            tokenFile);
        return api;
    }

    private static SSLContext sslContext(final ApiConfig.Tls tls) throws Exception {
        final char[] password = (tls.password != null ? tls.password
            : tls.passwordFile != null ? Files.readString(Path.of(tls.passwordFile)).trim() : "").toCharArray();
        final KeyStore keyStore = KeyStore.getInstance("PKCS12");
        try (InputStream in = Files.newInputStream(Path.of(tls.keystore))) {
            keyStore.load(in, password);
        }
        final KeyManagerFactory kmf = KeyManagerFactory.getInstance(KeyManagerFactory.getDefaultAlgorithm());
        kmf.init(keyStore, password);
        final SSLContext context = SSLContext.getInstance("TLS");
        context.init(kmf.getKeyManagers(), null, null);
        return context;
    }

    public InetSocketAddress address() {
        return server.getAddress();
    }

    /** Adds a route; {@code template} is written as in the OpenAPI document ({@code /v1/volumes/{name}}). */
    private void route(final String method, final String template, final Handler handler, final boolean idempotent) {
        routes.add(new Route(method, template, Pattern.compile(template.replaceAll("\\{[a-z]+}", "([^/]+)")), handler,
            idempotent));
    }

    /** Every served route as {@code "METHOD /template"}, for the test that compares them with the OpenAPI file. */
    public List<String> routes() {
        final List<String> list = new ArrayList<>();
        for (final Route r : routes) {
            list.add(r.method() + " " + r.template());
        }
        return list;
    }

    // ---------------------------------------------------------------------------------------------- dispatch

    private void handle(final HttpExchange exchange) {
        try (exchange) {
            Reply reply;
            try {
                reply = dispatch(exchange);
            } catch (final Exception e) {
                reply = toReply(e);
                if (reply.status() == 500) {
                    LOG.warn("API {} {} failed", exchange.getRequestMethod(), exchange.getRequestURI().getPath(), e);
                }
            }
            send(exchange, reply);
        } catch (final IOException e) {
            LOG.debug("API client went away: {}", e.toString());
        }
    }

    private Reply dispatch(final HttpExchange exchange) throws Exception {
        if (!authorised(exchange)) {
            LOG.warn("API: refused {} {} from {}: missing or wrong bearer token", exchange.getRequestMethod(),
                exchange.getRequestURI().getPath(), exchange.getRemoteAddress());
            exchange.getResponseHeaders().add("WWW-Authenticate", "Bearer");
            throw new ApiException(401, "unauthorized", "missing or wrong bearer token; send 'Authorization: Bearer"
                + " <token>' with the token from the server's token file");
        }
        final URI uri = exchange.getRequestURI();
        final String path = uri.getRawPath();
        final String method = exchange.getRequestMethod();
        boolean pathMatched = false;
        for (final Route route : routes) {
            final Matcher m = route.pattern().matcher(path);
            if (!m.matches()) {
                continue;
            }
            pathMatched = true;
            if (!route.method().equals(method)) {
                continue;
            }
            if ((closing || tail.nbd().context().shuttingDown()) && !path.equals("/v1/status")) {
                throw new ApiException(503, "shutting_down", "the server is shutting down; retry against it once it"
                    + " is back");
            }
            final Request request = new Request(exchange, m, query(uri.getRawQuery()), body(exchange));
            final String key = exchange.getRequestHeaders().getFirst("Idempotency-Key");
            if (route.idempotent() && key != null) {
                return idempotent(key, method, path, request, route.handler());
            }
            return route.handler().handle(request);
        }
        if (pathMatched) {
            throw new ApiException(405, "method_not_allowed", method + " is not supported on " + path);
        }
        throw new ApiException(404, "not_found", "no such resource: " + path + "; see docs/api/openapi.yaml");
    }

    private Reply idempotent(final String key, final String method, final String path, final Request request,
                             final Handler handler) throws Exception {
        if (key.isEmpty() || key.length() > IdempotencyStore.MAX_KEY_LENGTH) {
            throw new ApiException(400, "invalid_idempotency_key", "Idempotency-Key must be 1 to "
                + IdempotencyStore.MAX_KEY_LENGTH + " characters");
        }
        final String requestHash = IdempotencyStore.hash(method + " " + path + "\n"
            + new String(request.body(), StandardCharsets.UTF_8));
        synchronized (idempotency.lock(key)) {
            final IdempotencyStore.Entry first = idempotency.find(key);
            if (first != null) {
                if (!first.requestHash().equals(requestHash)) {
                    throw new ApiException(422, "idempotency_key_reused", "Idempotency-Key '" + key + "' was used for"
                        + " a different request; use a new key for a new request");
                }
                return new Reply(first.status(), new RawJson(first.body()), "application/json");
            }
            Reply reply;
            try {
                reply = handler.handle(request);
            } catch (final Exception e) {
                reply = toReply(e);
            }
            if (reply.status() < 500) {
                idempotency.store(key, new IdempotencyStore.Entry(method, path, requestHash, reply.status(),
                    json.writeValueAsString(reply.body()), Instant.now()));
            }
            return reply;
        }
    }

    /** A stored JSON body, sent as it is. */
    private record RawJson(String text) {
    }

    private boolean authorised(final HttpExchange exchange) {
        final String header = exchange.getRequestHeaders().getFirst("Authorization");
        if (header == null || !header.regionMatches(true, 0, "Bearer ", 0, 7)) {
            return false;
        }
        // Constant time, so the token cannot be guessed byte by byte from response times.
        return MessageDigest.isEqual(header.substring(7).trim().getBytes(StandardCharsets.UTF_8), token);
    }

    private static Map<String, String> query(final String raw) {
        final java.util.HashMap<String, String> map = new java.util.HashMap<>();
        if (raw != null) {
            for (final String pair : raw.split("&")) {
                final int eq = pair.indexOf('=');
                final String k = URLDecoder.decode(eq < 0 ? pair : pair.substring(0, eq), StandardCharsets.UTF_8);
                final String v = eq < 0 ? "" : URLDecoder.decode(pair.substring(eq + 1), StandardCharsets.UTF_8);
                map.put(k, v);
            }
        }
        return map;
    }

    private static byte[] body(final HttpExchange exchange) throws IOException, ApiException {
        try (InputStream in = exchange.getRequestBody()) {
            final byte[] bytes = in.readNBytes(MAX_BODY + 1);
            if (bytes.length > MAX_BODY) {
                throw new ApiException(400, "body_too_large", "request body larger than " + MAX_BODY + " bytes");
            }
            return bytes;
        }
    }

    private <T> T parse(final Request request, final Class<T> type, final boolean required) throws ApiException {
        if (request.body().length == 0) {
            if (required) {
                throw new ApiException(400, "missing_body", "this request needs a JSON body; see docs/api/openapi.yaml");
            }
            return null;
        }
        try {
            return json.readValue(request.body(), type);
        } catch (final UnrecognizedPropertyException e) {
            throw new ApiException(400, "unknown_field", "unknown field '" + e.getPropertyName() + "'; known fields: "
                + e.getKnownPropertyIds());
        } catch (final InputCoercionException | InvalidFormatException e) {
            throw new ApiException(422, "invalid_value", "invalid value: " + e.getOriginalMessage());
        } catch (final MismatchedInputException e) {
            throw new ApiException(400, "malformed_json", "wrong JSON type: " + e.getOriginalMessage());
        } catch (final JsonProcessingException e) {
            if (e instanceof InputCoercionException || e.getCause() instanceof InputCoercionException) {
                throw new ApiException(422, "invalid_value", "invalid value: " + e.getOriginalMessage());
            }
            throw new ApiException(400, "malformed_json", "malformed JSON: " + e.getOriginalMessage());
        } catch (final IOException e) {
            throw new ApiException(400, "malformed_json", "cannot read the body: " + e.getMessage());
        }
    }

    private void send(final HttpExchange exchange, final Reply reply) throws IOException {
        final byte[] bytes;
        if (reply.body() == null) {
            bytes = new byte[0];
        } else if (reply.body() instanceof String text && !reply.contentType().startsWith("application/json")) {
            bytes = text.getBytes(StandardCharsets.UTF_8);
        } else if (reply.body() instanceof RawJson raw) {
            bytes = raw.text().getBytes(StandardCharsets.UTF_8);
        } else {
            bytes = json.writeValueAsBytes(reply.body());
        }
        exchange.getResponseHeaders().set("Content-Type", reply.contentType());
        if (reply.status() == 204 || bytes.length == 0) {
            exchange.sendResponseHeaders(reply.status(), -1);
            return;
        }
        exchange.sendResponseHeaders(reply.status(), bytes.length);
        try (OutputStream out = exchange.getResponseBody()) {
            out.write(bytes);
        }
    }

    private Reply error(final int status, final String code, final String message) {
        final ObjectNode node = json.createObjectNode();
        node.put("error", code);
        node.put("message", message);
        return Reply.json(status, node);
    }

    /** The error reply for anything a handler threw. */
    private Reply toReply(final Exception e) {
        if (e instanceof ApiException api) {
            return error(api.status(), api.code(), api.getMessage());
        }
        if (e instanceof VolumeException volume) {
            return volumeError(volume);
        }
        if (e instanceof IllegalArgumentException) {
            return error(422, "invalid_value", e.getMessage());
        }
        if (e instanceof MirrorRefusedException) {
            return error(409, "mirror_refused", e.getMessage());
        }
        if (e instanceof IOException) {
            return error(502, "destination_unreachable", e.getMessage() + "; check the destination's address and"
                + " that it is running, then start the mirror again");
        }
        return error(500, "internal_error", "the server failed: " + e + "; see the server log");
    }

    private Reply volumeError(final VolumeException e) {
        return switch (e.code()) {
            case NOT_FOUND -> error(404, "volume_not_found", e.getMessage());
            case ALREADY_EXISTS -> error(409, "volume_exists", e.getMessage());
            case INVALID_NAME -> error(422, "invalid_name", e.getMessage());
            case INVALID_SIZE -> error(422, "invalid_size", e.getMessage());
            case INVALID_DEVICE -> error(422, "invalid_device", e.getMessage());
            case LOCKED -> error(409, "volume_busy", e.getMessage());
            case CORRUPT -> error(409, "volume_unavailable", e.getMessage());
            case SNAPSHOT_NOT_FOUND -> error(404, "snapshot_not_found", e.getMessage());
            case SNAPSHOT_EXISTS -> error(409, "snapshot_exists", e.getMessage());
            case CONFLICT -> error(409, "conflict", e.getMessage());
            case NEEDS_CHECK -> error(409, "volume_needs_check", e.getMessage());
            case IO_ERROR -> error(500, "io_error", e.getMessage());
        };
    }

    // ---------------------------------------------------------------------------------------------- resources

    private Reply status(final Request request) throws IOException {
        final ObjectNode node = json.createObjectNode();
        final String version = ApiServer.class.getPackage().getImplementationVersion();
        node.put("version", version != null ? version : "dev");
        node.put("uptimeSeconds", (System.currentTimeMillis() - tail.started().toEpochMilli()) / 1000);
        node.put("dataDir", tail.dataDir().toString());
        node.put("dataDirFreeBytes", Files.getFileStore(tail.dataDir()).getUsableSpace());
        final List<Export> exports = tail.volumes().all();
        node.put("volumeCount", exports.size() + tail.volumes().unavailable().size());
        node.put("connectionCount", tail.nbd().connectionCount());
        final ArrayNode failed = node.putArray("failedVolumes");
        for (final Export e : exports) {
            if (e.volume().failure() != null) {
                failed.add(e.name());
            }
        }
        tail.volumes().unavailable().keySet().forEach(failed::add);
        final StallWatchdog watchdog = tail.watchdog();
        final ObjectNode stalls = node.putObject("stalls");
        stalls.put("count", watchdog.stalls());
        stalls.put("longestMillis", watchdog.longestMillis());
        stalls.put("lastMillis", watchdog.lastStallMillis());
        stalls.put("lastAt", watchdog.lastStallAt() == null ? null : watchdog.lastStallAt().toString());
        stalls.put("heapHigh", watchdog.heapHigh());
        final BufferBudget budget = tail.nbd().context().buffers();
        final ObjectNode buffers = node.putObject("buffers");
        buffers.put("usedBytes", budget.used());
        buffers.put("limitBytes", budget.limit());
        buffers.put("waits", budget.waits());
        final boolean memoryShort = System.currentTimeMillis() - budget.lastWaitMillis() < RECENT_TROUBLE_MILLIS;
        buffers.put("short", memoryShort);
        node.put("health", closing || tail.nbd().context().shuttingDown() ? "shutting-down"
            : failed.isEmpty() && !watchdog.troubled() && !memoryShort ? "ok" : "degraded");
        return Reply.json(200, node);
    }

    private ArrayNode volumes() throws Exception {
        final ArrayNode array = json.createArrayNode();
        for (final Export export : tail.volumes().all()) {
            array.add(volume(export));
        }
        return array;
    }

    private ObjectNode volume(final Export export) throws Exception {
        final Volume volume = export.volume();
        final VolumeMetadata m = volume.metadata();
        final ObjectNode node = json.createObjectNode();
        node.put("name", m.name());
        node.put("id", m.id().toString());
        node.put("kind", m.kind() == VolumeMetadata.Kind.FILE ? "file" : "device");
        node.put("size", volume.size());
        // One look at the files: info() walks the data file's (and every layer's) allocation.
        final VolumeInfo info = tail.volumes().volumes().info(m.name());
        node.put("allocatedBytes", info.allocatedBytes());
        final Ownership owner = tail.volumes().ownership(m.name());
        node.put("state", tail.volumes().isHeld(m.name()) ? owner.state() : volume.failure() != null ? "failed"
            : m.readOnly() ? "read-only" : "serving");
        node.put("epoch", owner.epoch());
        if (owner.serviceAddress() != null) {
            node.put("serviceAddress", owner.serviceAddress());
        }
        if (owner.state().equals(Ownership.MOVED)
            || owner.state().equals(Ownership.HANDING_OVER)) {
            node.put("movedTo", owner.peer());
        }
        if (owner.state().equals(Ownership.RECEIVING) && owner.sourceIdentity() != null) {
            node.put("sourceIdentity", owner.sourceIdentity());
        }
        node.put("readOnly", m.readOnly());
        node.put("description", m.description());
        node.put("created", m.created().toString());
        node.put("path", info.dataPath().toString());
        if (volume.failure() != null) {
            node.put("failure", volume.failure().getMessage());
        }
        // The live chain, bottom first: the snapshots below the active layer, then the active layer itself.
        final ArrayNode layers = node.putArray("layers");
        if (volume.layers() != null) {
            for (final LayeredDevice.SnapshotInfo s : volume.layers().snapshots()) {
                if (s.inLiveChain()) {
                    layers.addObject().put("snapshot", s.name()).put("ownedBytes", s.ownedBytes());
                }
            }
            layers.addObject().putNull("snapshot").put("ownedBytes", volume.layers().activeOwnedBytes());
        }
        node.set("clients", clients(export));
        node.set("acl", acl(export));
        return node;
    }

    private ArrayNode clients(final Export export) throws Exception {
        final ArrayNode array = json.createArrayNode();
        for (final NbdTransmissionHandler connection : export.connections()) {
            final NbdTransmissionHandler.ClientInfo info;
            try {
                info = connection.info().get(2, TimeUnit.SECONDS);
            } catch (final java.util.concurrent.ExecutionException | java.util.concurrent.TimeoutException e) {
                continue; // closed meanwhile
            }
            final ObjectNode c = array.addObject();
            c.put("id", info.id());
            c.put("address", info.address());
            c.put("since", info.since().toString());
            c.put("bytesRead", info.bytesRead());
            c.put("bytesWritten", info.bytesWritten());
            c.put("requests", info.requests());
            c.put("inFlight", info.inFlight());
        }
        return array;
    }

    private ObjectNode acl(final Export export) {
        final ObjectNode node = json.createObjectNode();
        if (export.accessList() == null) {
            node.putNull("allow");
        } else {
            final ArrayNode allow = node.putArray("allow");
            export.accessList().entries().forEach(allow::add);
        }
        node.put("effectiveDefault", tail.volumes().defaultAllow() ? "allow" : "deny");
        return node;
    }

    /** Body of POST /v1/volumes. */
    private record CreateVolume(String name, Long size, String devicePath, String description, Boolean readOnly) {
    }

    private Reply createVolume(final Request request) throws Exception {
        final CreateVolume body = parse(request, CreateVolume.class, true);
        if (body.name() == null) {
            throw new ApiException(422, "invalid_name", "the field 'name' is required");
        }
        if (body.devicePath() == null && body.size() == null) {
            throw new ApiException(422, "invalid_size", "give 'size' in bytes for a file volume, or 'devicePath' for a"
                + " block device");
        }
        final long size = body.size() == null ? 0 : body.size();
        if (body.size() != null && size <= 0) {
            throw new ApiException(422, "invalid_size", "size must be positive, got " + size);
        }
        final Export export = tail.volumes().create(body.name(), size, body.devicePath(),
            body.description() == null ? "" : body.description(), Boolean.TRUE.equals(body.readOnly()));
        return Reply.json(201, volume(export));
    }

    private Reply deleteVolume(final Request request) throws Exception {
        final String force = request.query().getOrDefault("force", "false");
        if (!force.equals("true") && !force.equals("false")) {
            throw new ApiException(422, "invalid_value", "force must be true or false, got '" + force + "'");
        }
        tail.volumes().delete(request.param(1), force.equals("true"));
        return new Reply(204, null, "application/json");
    }

    /** Body of POST /v1/volumes/{name}/grow. */
    private record Grow(Long size) {
    }

    private Reply growVolume(final Request request) throws Exception {
        final Grow body = parse(request, Grow.class, true);
        if (body.size() == null || body.size() <= 0) {
            throw new ApiException(422, "invalid_size", "give the new size in bytes as 'size'");
        }
        return Reply.json(200, volume(tail.volumes().grow(request.param(1), body.size())));
    }

    private Reply disconnectClient(final Request request) throws Exception {
        final Export export = tail.volumes().export(request.param(1));
        final NbdTransmissionHandler connection = export.connection(request.param(2));
        if (connection == null) {
            throw new ApiException(404, "client_not_found", "no client '" + request.param(2) + "' on volume '"
                + export.name() + "'; list them with GET /v1/volumes/" + export.name() + "/clients");
        }
        connection.disconnect();
        return new Reply(204, null, "application/json");
    }

    /** Body of PUT /v1/volumes/{name}/acl; {@code effectiveDefault} is accepted and ignored so a GET can be echoed. */
    private record SetAcl(List<String> allow, String effectiveDefault) {
    }

    private Reply setAcl(final Request request) throws Exception {
        final SetAcl body = parse(request, SetAcl.class, true);
        return Reply.json(200, acl(tail.volumes().setAccessList(request.param(1), body.allow())));
    }

    /** Body of POST /v1/volumes/{name}/scrub. */
    private record Scrub(Long bytesPerSecond) {
    }

    private Reply scrub(final Request request) throws Exception {
        final Scrub body = parse(request, Scrub.class, false);
        final long rate = body == null || body.bytesPerSecond() == null ? 0 : body.bytesPerSecond();
        if (rate < 0) {
            throw new ApiException(422, "invalid_value", "bytesPerSecond must not be negative");
        }
        final Export export = tail.volumes().served(request.param(1));
        final Operation op = tail.operations().startExclusive("scrub", export.name(), export.size(),
            (operation, progress) -> Scrubber.scrub(export.volume(), rate, operation, progress));
        if (op == null) {
            throw new ApiException(409, "operation_running", "a scrub of '" + export.name() + "' is already running;"
                + " see GET /v1/operations");
        }
        return Reply.json(202, op);
    }

    /** Body of POST /v1/volumes/{name}/snapshots and of .../clone. */
    private record NameBody(String name) {
    }

    private ArrayNode snapshots(final String volume) throws VolumeException {
        final ArrayNode array = json.createArrayNode();
        for (final LayeredDevice.SnapshotInfo info : tail.volumes().snapshots(volume)) {
            array.add(snapshotJson(volume, info));
        }
        return array;
    }

    private ObjectNode snapshot(final String volume, final String name) throws VolumeException {
        for (final LayeredDevice.SnapshotInfo info : tail.volumes().snapshots(volume)) {
            if (info.name().equals(name)) {
                return snapshotJson(volume, info);
            }
        }
        throw new VolumeException(VolumeException.Code.SNAPSHOT_NOT_FOUND, "no snapshot '" + name + "' of volume '"
            + volume + "'; list them with GET /v1/volumes/" + volume + "/snapshots");
    }

    private ObjectNode snapshotJson(final String volume, final LayeredDevice.SnapshotInfo info) {
        final ObjectNode node = json.createObjectNode();
        node.put("name", info.name());
        node.put("volume", volume);
        node.put("export", volume + "@" + info.name());
        node.put("created", info.created().toString());
        node.put("parent", info.parent());
        node.put("ownedBytes", info.ownedBytes());
        node.put("inLiveChain", info.inLiveChain());
        node.put("layer", info.layer().toString());
        return node;
    }

    private Reply createSnapshot(final Request request) throws Exception {
        final NameBody body = parse(request, NameBody.class, true);
        if (body.name() == null) {
            throw new ApiException(422, "invalid_name", "the field 'name' is required");
        }
        return Reply.json(201, snapshotJson(request.param(1), tail.volumes().createSnapshot(request.param(1),
            body.name())));
    }

    /** Merging a snapshot's layer away copies data, so it runs as an operation; the answer is 202. */
    private Reply deleteSnapshot(final Request request) throws Exception {
        final String volume = request.param(1);
        final String snapshot = request.param(2);
        tail.volumes().requireSnapshot(volume, snapshot);
        final Operation op = tail.operations().startExclusive("delete-snapshot", volume, 0,
            (operation, progress) -> tail.volumes().deleteSnapshot(volume, snapshot));
        if (op == null) {
            throw new ApiException(409, "operation_running", "a snapshot of '" + volume + "' is being deleted"
                + " already; wait for it (GET /v1/operations) and retry");
        }
        return Reply.json(202, op);
    }

    private Reply rollback(final Request request) throws Exception {
        tail.volumes().rollback(request.param(1), request.param(2));
        return Reply.json(200, volume(tail.volumes().export(request.param(1))));
    }

    private Reply cloneSnapshot(final Request request) throws Exception {
        final NameBody body = parse(request, NameBody.class, true);
        if (body.name() == null) {
            throw new ApiException(422, "invalid_name", "the field 'name' (the new volume's name) is required");
        }
        return Reply.json(201, volume(tail.volumes().cloneVolume(request.param(1), request.param(2), body.name())));
    }

    // ------------------------------------------------------------------------------------------------ mirroring

    /** Body of POST /v1/volumes/{name}/receive. */
    private record Receive(Long size, String token, String source, String sourceIdentity) {
    }

    private Reply receive(final Request request) throws Exception {
        final Receive body = parse(request, Receive.class, true);
        if (body.size() == null || body.size() <= 0) {
            throw new ApiException(422, "invalid_size", "give the source volume's size in bytes as 'size'");
        }
        if (body.token() == null) {
            throw new ApiException(422, "invalid_value", "give the shared secret as 'token' (at least 16 characters);"
                + " the source's mirror request must present the same");
        }
        return Reply.json(201, volume(tail.mirrors().receive(request.param(1), body.size(), body.token(),
            body.source(), body.sourceIdentity())));
    }

    /** Body of PUT /v1/volumes/{name}/address. */
    private record Address(String address) {
    }

    private Reply setAddress(final Request request) throws Exception {
        final Address body = parse(request, Address.class, true);
        tail.volumes().served(request.param(1));
        tail.addresses().set(request.param(1), body.address());
        final ObjectNode node = json.createObjectNode();
        node.put("address", body.address());
        return Reply.json(200, node);
    }

    /** Body of POST /v1/volumes/{name}/mirror. */
    private record StartMirror(String destination, String token, Long bytesPerSecond, Long convergeMillis) {
    }

    private Reply startMirror(final Request request) throws Exception {
        final StartMirror body = parse(request, StartMirror.class, true);
        if (body.destination() == null || body.token() == null) {
            throw new ApiException(422, "invalid_value", "give 'destination' (HOST:PORT of the destination tail's NBD"
                + " listener) and the 'token' the destination was given in its receive request");
        }
        final long rate = body.bytesPerSecond() == null ? 0 : body.bytesPerSecond();
        if (rate < 0 || body.convergeMillis() != null && body.convergeMillis() <= 0) {
            throw new ApiException(422, "invalid_value", "bytesPerSecond must be >= 0 (0: unlimited) and"
                + " convergeMillis positive");
        }
        try {
            return Reply.json(202, tail.mirrors().start(request.param(1), new MirrorService.Request(
                body.destination(), body.token(), rate, body.convergeMillis())));
        } catch (final IllegalStateException e) {
            throw new ApiException(409, "mirror_running", e.getMessage());
        }
    }

    private MirrorJob mirrorJob(final String name) throws Exception {
        tail.volumes().export(name);
        final MirrorJob job = tail.mirrors().job(name);
        if (job == null) {
            throw new ApiException(404, "mirror_not_found", "volume '" + name + "' has not been mirrored since the"
                + " server started; start one with POST /v1/volumes/" + name + "/mirror");
        }
        return job;
    }

    private Reply abortMirror(final Request request) throws Exception {
        final MirrorJob job = mirrorJob(request.param(1));
        if (!job.abort()) {
            throw new ApiException(409, "mirror_cutover", "the mirror of '" + request.param(1) + "' is past its"
                + " hand-over point and cannot be aborted; if its state is 'unknown', check the destination and use"
                + " POST /v1/volumes/" + request.param(1) + "/mirror/resolve");
        }
        try {
            job.done().get(10, TimeUnit.SECONDS);
        } catch (final java.util.concurrent.TimeoutException e) {
            // reported as still stopping
        }
        return Reply.json(200, job.status());
    }

    /** Body of PUT /v1/volumes/{name}/mirror/rate. */
    private record MirrorRate(Long bytesPerSecond) {
    }

    private Reply mirrorRate(final Request request) throws Exception {
        final MirrorRate body = parse(request, MirrorRate.class, true);
        if (body.bytesPerSecond() == null || body.bytesPerSecond() < 0) {
            throw new ApiException(422, "invalid_value", "give 'bytesPerSecond' >= 0 (0: unlimited)");
        }
        final MirrorJob job = mirrorJob(request.param(1));
        job.rateLimit(body.bytesPerSecond());
        return Reply.json(200, job.status());
    }

    /** Body of POST /v1/volumes/{name}/mirror/resolve. */
    private record Resolve(String outcome) {
    }

    private Reply resolveMirror(final Request request) throws Exception {
        final Resolve body = parse(request, Resolve.class, true);
        if (!"moved".equals(body.outcome()) && !"source".equals(body.outcome())) {
            throw new ApiException(422, "invalid_value", "outcome must be 'moved' (the destination owns the volume:"
                + " check GET /v1/volumes/NAME there first) or 'source' (after the destination refused or deleted"
                + " it)");
        }
        final String name = request.param(1);
        tail.volumes().export(name);
        if (!tail.mirrors().resolve(name, body.outcome().equals("moved"))) {
            throw new ApiException(409, "nothing_to_resolve", "volume '" + name + "' has no cutover with an unknown"
                + " outcome");
        }
        return Reply.json(200, volume(tail.volumes().export(name)));
    }

    private Operation operation(final String id) throws ApiException {
        final Operation op = tail.operations().get(id);
        if (op == null) {
            throw new ApiException(404, "operation_not_found", "no operation '" + id + "'; list them with GET"
                + " /v1/operations");
        }
        return op;
    }

    /** Stops taking calls; calls in progress finish (up to 2 seconds). */
    @Override
    public void close() {
        closing = true;
        server.stop(2);
        executor.shutdown();
    }
}
