package io.nbdtail.server;

import com.fasterxml.jackson.databind.JsonNode;
import com.fasterxml.jackson.databind.ObjectMapper;
import com.fasterxml.jackson.databind.node.ObjectNode;
import io.nbdtail.nbd.access.AccessList;
import io.nbdtail.nbd.client.NbdClient;
import io.nbdtail.nbd.engine.Export;
import io.nbdtail.nbd.engine.MirrorPeer;
import io.nbdtail.nbd.engine.NbdTransmissionHandler;
import io.nbdtail.nbd.tls.ClientIdentity;
import io.nbdtail.nbd.tls.ClientTls;
import io.nbdtail.nbd.tls.NbdTls;
import io.nbdtail.replication.CutoverHooks;
import io.nbdtail.replication.MirrorConfig;
import io.nbdtail.replication.MirrorJob;
import io.nbdtail.replication.MirrorRefusedException;
import io.nbdtail.replication.MirrorSession;
import io.nbdtail.replication.MirrorStatus;
import io.nbdtail.replication.SnapshotLayer;
import io.nbdtail.layer.LayeredDevice;
import io.nbdtail.layer.Manifest;
import io.nbdtail.storage.FaultPoints;
import io.nbdtail.storage.StorageException;
import io.nbdtail.volume.Volume;
import io.nbdtail.volume.VolumeException;
import io.nbdtail.volume.VolumeService;
import io.netty.channel.EventLoopGroup;
import org.slf4j.Logger;
import org.slf4j.LoggerFactory;

import java.io.IOException;
import java.net.InetSocketAddress;
import java.net.SocketAddress;
import java.nio.charset.StandardCharsets;
import java.security.MessageDigest;
import java.security.NoSuchAlgorithmException;
import java.time.Instant;
import java.util.ArrayList;
import java.util.HexFormat;
import java.util.List;
import java.util.Map;
import java.util.UUID;
import java.util.concurrent.CompletableFuture;
import java.util.concurrent.ConcurrentHashMap;
import java.util.concurrent.ExecutionException;
import java.util.concurrent.ExecutorService;
import java.util.concurrent.Executors;
import java.util.concurrent.TimeUnit;
import java.util.concurrent.TimeoutException;

import static io.nbdtail.nbd.protocol.NbdConstants.REP_ERR_INVALID;
import static io.nbdtail.nbd.protocol.NbdConstants.REP_ERR_POLICY;

/**
 * Live mirroring on this tail, both roles:
 * <ul>
 *   <li><b>destination</b>: {@link #receive} creates a held volume; the {@link MirrorPeer} methods answer the
 *       source's hello (authenticate, check the volume, drain stale connections, record the session), commit
 *       (record "mine at epoch N+1" durably, then serve) and resolve (after a lost commit answer);</li>
 *   <li><b>source</b>: {@link #start} runs a {@link MirrorJob} against an {@link NbdMirrorTarget}, with the
 *       cutover hooks recording ownership and withdrawing the volume.</li>
 * </ul>
 * See {@code docs/mirroring.md}.
 */
public final class MirrorService implements MirrorPeer, AutoCloseable {
    private static final Logger LOG = LoggerFactory.getLogger(MirrorService.class);

    private final VolumeManager volumes;
    private final MirrorConfig defaults;
    private final ObjectMapper json = VolumeService.mapper();
    private final ExecutorService peerThreads = Executors.newVirtualThreadPerTaskExecutor();
    private final ConcurrentHashMap<String, MirrorJob> jobs = new ConcurrentHashMap<>();
    private final ConcurrentHashMap<String, Object> locks = new ConcurrentHashMap<>();
    private final ClientTls sourceTls;
    private final NbdTls destinationTls;
    private volatile EventLoopGroup clientGroup;
    private volatile ServiceAddresses addresses;

    /** @param defaults tuning of every mirror started here (a request may change the rate and convergence). */
    public MirrorService(final VolumeManager volumes, final MirrorConfig defaults) {
        this(volumes, defaults, null, null);
    }

    /**
     * @param sourceTls      TLS of this tail's connections to destinations ({@code mirror.tls}); {@code null}:
     *                       plaintext.
     * @param destinationTls this tail's NBD listener's TLS ({@code nbd.tls}), to check the source identities
     *                       {@link #receive} names; {@code null}: off.
     */
    public MirrorService(final VolumeManager volumes, final MirrorConfig defaults, final ClientTls sourceTls,
                         final NbdTls destinationTls) {
        this.volumes = volumes;
        this.defaults = defaults.validate();
        this.sourceTls = sourceTls;
        this.destinationTls = destinationTls;
    }

    /** Where per-volume service addresses are bound; set by the server once it listens. */
    public void addresses(final ServiceAddresses addresses) {
        this.addresses = addresses;
    }

    private Object lock(final String name) {
        return locks.computeIfAbsent(name, n -> new Object());
    }

    private EventLoopGroup group() {
        EventLoopGroup g = clientGroup;
        if (g == null) {
            synchronized (this) {
                g = clientGroup;
                if (g == null) {
                    g = NbdClient.newGroup(1);
                    clientGroup = g;
                }
            }
        }
        return g;
    }

    // ------------------------------------------------------------------------------------------ destination

    /**
     * Creates {@code name} as an empty sparse volume that receives a mirror: not served, written only by a source
     * that presents {@code token} (and, if {@code source} is given, connects from that address or network).
     */
    public Export receive(final String name, final long size, final String token, final String source)
        throws VolumeException {
        return receive(name, size, token, source, null);
    }

    /**
     * Like {@link #receive(String, long, String, String)}, and the source must also have proved
     * {@code sourceIdentity} over TLS ({@code dn:SUBJECT} of its client certificate or {@code psk:IDENTITY}).
     */
    public Export receive(final String name, final long size, final String token, final String source,
                          final String sourceIdentity) throws VolumeException {
        final ClientIdentity identity = sourceIdentity == null ? null : ClientIdentity.parse(sourceIdentity);
        if (identity != null) {
            NbdTls.checkProvable(destinationTls, identity, "sourceIdentity");
        }
        if (token == null || token.length() < 16) {
            throw new IllegalArgumentException("token must be at least 16 characters; use a random secret shared"
                + " with the source's mirror request");
        }
        if (source != null) {
            AccessList.parse(List.of(source));
        }
        final Ownership record = new Ownership(Ownership.RECEIVING, 0, source, null, null, sha256(token), null,
            false, null, identity == null ? null : identity.toString(), Instant.now());
        final Export export = volumes.createHeld(name, size, record);
        LOG.info("volume {} created to receive a mirror ({} bytes, source {}{})", name, size,
            source == null ? "any address" : source, identity == null ? "" : ", TLS identity " + identity);
        return export;
    }

    @Override
    public CompletableFuture<Result> handle(final byte[] request, final SocketAddress client,
                                            final ClientIdentity identity) {
        final CompletableFuture<Result> result = new CompletableFuture<>();
        peerThreads.execute(() -> {
            final JsonNode parsed;
            try {
                parsed = json.readTree(request);
            } catch (final IOException e) {
                result.completeExceptionally(new Refused(REP_ERR_INVALID, "malformed mirror request: "
                    + e.getMessage()));
                return;
            }
            try {
                result.complete(answer(parsed, client, identity));
            } catch (final Refused e) {
                LOG.warn("mirror request from {} refused: {}", client, e.getMessage());
                result.completeExceptionally(e);
            } catch (final Exception e) {
                // Not a refusal: a fault here (a disc error, a server shutting down). The option error is
                // ERR_PLATFORM, which the source retries rather than taking as a final no.
                LOG.error("mirror request from {} failed", client, e);
                result.completeExceptionally(e);
            }
        });
        return result;
    }

    private Result answer(final JsonNode request, final SocketAddress client, final ClientIdentity identity)
        throws Exception {
        final String op = request.path("op").asText();
        final String name = request.path("volume").asText();
        synchronized (lock(name)) {
            final Export export = volumes.heldExport(name);
            final Ownership owner = export != null ? volumes.ownership(name) : null;
            if (op.equals("commit") || op.equals("resolve")) {
                final Export served = export == null ? findServed(name) : null;
                final Ownership current = volumes.ownership(name);
                authenticate(current, request, client, identity, name);
                return op.equals("commit") ? commit(name, export, served, current, request)
                    : resolve(name, current, request);
            }
            if (!op.equals("hello") && !op.equals("layer") && !op.equals("seal")) {
                throw new Refused(REP_ERR_INVALID, "unknown mirror operation '" + op + "'");
            }
            if (export == null || !owner.state().equals(Ownership.RECEIVING)) {
                throw new Refused(REP_ERR_POLICY, "volume '" + name + "' is not receiving a mirror here, or the token"
                    + " is wrong; ask the destination to receive it first (POST /v1/volumes/" + name + "/receive)");
            }
            authenticate(owner, request, client, identity, name);
            if (op.equals("hello")) {
                return hello(name, export, owner, request);
            }
            final String session = request.path("session").asText();
            if (!session.equals(owner.session())) {
                throw new Refused(REP_ERR_POLICY, "volume '" + name + "' is not receiving session " + session
                    + " here (a newer session said hello); this request is stale");
            }
            final LayeredDevice layers = export.volume().layers();
            return op.equals("layer") ? startLayer(name, layers, request) : seal(name, export.volume(), request);
        }
    }

    private Export findServed(final String name) {
        try {
            return volumes.isHeld(name) ? null : volumes.export(name);
        } catch (final VolumeException e) {
            return null;
        }
    }

    private void authenticate(final Ownership owner, final JsonNode request, final SocketAddress client,
                              final ClientIdentity identity, final String name) throws Refused {
        final String token = request.path("token").asText("");
        final boolean identified = owner.sourceIdentity() == null
            || identity != null && identity.equals(ClientIdentity.parse(owner.sourceIdentity()));
        if (!identified) {
            // Answered exactly like a wrong token; the reason is only in this log.
            LOG.warn("mirror request for {} from {}: TLS identity {} is not {}, the source named when it was set to"
                + " receive", name, client, identity == null ? "none (no TLS)" : identity, owner.sourceIdentity());
        }
        if (!identified || owner.tokenSha256() == null || !MessageDigest.isEqual(owner.tokenSha256().getBytes(
            StandardCharsets.UTF_8), sha256(token).getBytes(StandardCharsets.UTF_8))) {
            throw new Refused(REP_ERR_POLICY, "volume '" + name + "' is not receiving a mirror here, or the token is"
                + " wrong; ask the destination to receive it first (POST /v1/volumes/" + name + "/receive)");
        }
        if (owner.state().equals(Ownership.RECEIVING) && owner.peer() != null
            && !AccessList.parse(List.of(owner.peer())).allows(client)) {
            throw new Refused(REP_ERR_POLICY, "mirror source " + client + " is not " + owner.peer() + ", the source"
                + " named when volume '" + name + "' was set to receive");
        }
    }

    private Result hello(final String name, final Export export, final Ownership owner, final JsonNode request)
        throws Exception {
        final long size = request.path("size").asLong(-1);
        if (size != export.size()) {
            throw new Refused(REP_ERR_INVALID, "size mismatch: the source's volume '" + name + "' has " + size
                + " bytes, this one " + export.size() + "; receive it again with the source's size");
        }
        final String volumeId = request.path("volumeId").asText();
        if (owner.originId() != null && !owner.originId().equals(volumeId)) {
            throw new Refused(REP_ERR_INVALID, "wrong volume: '" + name + "' here receives volume id "
                + owner.originId() + ", not " + volumeId + "; delete it and receive again for another volume");
        }
        final String session = request.path("session").asText();
        if (session.equals(owner.cancelledSession())) {
            throw new Refused(REP_ERR_POLICY, "mirror session " + session + " was cancelled here after its cutover"
                + " was resolved; start a new mirror");
        }
        final boolean resumable = session.equals(owner.session());
        final boolean empty = !owner.written();
        final List<LayeredDevice.SnapshotInfo> snapshots = export.volume().layers().snapshots();
        if (!resumable && !snapshots.isEmpty()) {
            throw new Refused(REP_ERR_POLICY, "volume '" + name + "' here holds " + snapshots.size() + " snapshot(s)"
                + " from an earlier mirror session; a new session cannot reuse them. Delete the volume here"
                + " (DELETE /v1/volumes/" + name + "), receive it again and start the mirror again");
        }
        // A new connection from the source: the old ones are stale (their writes must not land after the new
        // session's). Close them and wait until none of their requests is running.
        drain(export);
        final long epoch = request.path("epoch").asLong();
        final String address = request.path("serviceAddress").isTextual() ? request.path("serviceAddress").asText()
            : null;
        volumes.recordOwnership(name, owner.withSession(session, volumeId, epoch).withServiceAddress(address));
        final ObjectNode reply = json.createObjectNode();
        reply.put("resumable", resumable);
        reply.put("empty", empty);
        reply.put("epoch", epoch);
        reply.set("snapshots", json.valueToTree(tree(snapshots)));
        LOG.info("mirror hello for {} from session {} ({}{})", name, session, resumable ? "resuming" : "new copy",
            empty ? ", empty" : "");
        return new Result(json.writeValueAsBytes(reply), export);
    }

    private static void drain(final Export export) throws InterruptedException {
        final List<NbdTransmissionHandler> stale = export.connections();
        stale.forEach(NbdTransmissionHandler::forceClose);
        final long deadline = System.nanoTime() + TimeUnit.SECONDS.toNanos(5);
        for (final NbdTransmissionHandler connection : stale) {
            while (System.nanoTime() < deadline) {
                try {
                    if (connection.info().get(1, TimeUnit.SECONDS).inFlight() == 0
                        && !export.connections().contains(connection)) {
                        break;
                    }
                } catch (final ExecutionException | TimeoutException e) {
                    break;
                }
                Thread.sleep(5);
            }
        }
    }

    private Result commit(final String name, final Export export, final Export served, final Ownership owner,
                          final JsonNode request) throws Exception {
        final String session = request.path("session").asText();
        final long epoch = request.path("epoch").asLong();
        if (served != null && owner.served() && owner.epoch() == epoch && session.equals(owner.session())) {
            // The source asks again (its first answer was lost): it is ours already.
            return reply("epoch", epoch);
        }
        if (export == null || !owner.state().equals(Ownership.RECEIVING) || !session.equals(owner.session())) {
            throw new Refused(REP_ERR_POLICY, "volume '" + name + "' is not receiving session " + session
                + " here; the cutover is refused and the source keeps the volume");
        }
        if (epoch != owner.epoch() + 1) {
            throw new Refused(REP_ERR_INVALID, "cutover to epoch " + epoch + " but the copy is of epoch "
                + owner.epoch() + "; refused");
        }
        checkTree(name, export.volume().layers(), request);
        // The source flushed before asking; flush again so the record never precedes the data.
        final long start = System.nanoTime();
        drain(export);
        final Volume volume = export.volume();
        final long drained = System.nanoTime();
        try {
            volume.flusher().syncNow();
        } catch (final StorageException e) {
            throw new Refused(REP_ERR_POLICY, "cannot sync volume '" + name + "' here: " + e.getMessage()
                + "; the cutover is refused");
        }
        final long synced = System.nanoTime();
        FaultPoints.hit("dest.before-record");
        volumes.recordOwnership(name, owner.with(Ownership.SERVING, epoch, owner.peer()));
        final long recorded = System.nanoTime();
        FaultPoints.hit("dest.recorded");
        volumes.adopt(name);
        final ServiceAddresses a = addresses;
        if (a != null) {
            a.volumeServed(name);
        }
        LOG.info("volume {} is ours at epoch {} (mirror session {}); serving it (drain {} ms, sync {} ms, record {}"
            + " ms)", name, epoch, session, (drained - start) / 1_000_000, (synced - drained) / 1_000_000,
            (recorded - synced) / 1_000_000);
        return reply("epoch", epoch);
    }

    /** The snapshots here as the source describes its own (cluster counts are not kept). */
    private static List<SnapshotLayer> tree(final List<LayeredDevice.SnapshotInfo> snapshots) {
        final List<SnapshotLayer> tree = new ArrayList<>();
        for (final LayeredDevice.SnapshotInfo s : snapshots) {
            tree.add(new SnapshotLayer(s.name(), s.parent(), s.created().toString(), -1, -1));
        }
        return tree;
    }

    /**
     * Snapshot layers: a fresh, empty active layer on snapshot {@code parent} (a rollback, which drops what a copy
     * cut short left in the active layer), or for the bottom layer a check that there is no snapshot yet.
     */
    private Result startLayer(final String name, final LayeredDevice layers, final JsonNode request)
        throws Exception {
        final String parent = request.path("parent").isTextual() ? request.path("parent").asText() : null;
        if (parent == null) {
            if (!layers.snapshots().isEmpty()) {
                throw new Refused(REP_ERR_INVALID, "volume '" + name + "' here has snapshots already; the bottom layer"
                    + " of this session cannot go under them. Delete the volume here, receive it again and start"
                    + " the mirror again");
            }
        } else {
            try {
                layers.rollback(parent);
            } catch (final io.nbdtail.layer.SnapshotException e) {
                throw new Refused(REP_ERR_INVALID, "cannot start a layer on snapshot '" + parent + "' of '" + name
                    + "' here: " + e.getMessage());
            }
        }
        LOG.info("mirror of {}: receiving a layer on {}", name, parent == null ? "nothing (the bottom)" : parent);
        return reply("ok", true);
    }

    /**
     * Snapshot layers: checks that the active layer rests on the snapshot's parent and holds what the source's
     * layer holds, then takes the snapshot under the source's name and creation time. Idempotent.
     */
    private Result seal(final String name, final Volume volume, final JsonNode request) throws Exception {
        final SnapshotLayer snapshot = json.treeToValue(request.path("snapshot"), SnapshotLayer.class);
        final LayeredDevice layers = volume.layers();
        for (final LayeredDevice.SnapshotInfo s : layers.snapshots()) {
            if (s.name().equals(snapshot.name())) {
                if (java.util.Objects.equals(s.parent(), snapshot.parent())
                    && s.created().toString().equals(snapshot.created())) {
                    return reply("ok", true); // sealed already; the first answer was lost
                }
                throw new Refused(REP_ERR_INVALID, "snapshot '" + snapshot.name() + "' of '" + name + "' exists here"
                    + " on " + s.parent() + ", not on " + snapshot.parent() + "; refused");
            }
        }
        final Manifest m = layers.manifest();
        final String activeParent = m == null ? null : m.layer(m.active().parent()).snapshot();
        if (!java.util.Objects.equals(activeParent, snapshot.parent())) {
            throw new Refused(REP_ERR_INVALID, "cannot seal snapshot '" + snapshot.name() + "' of '" + name + "': the"
                + " layer here rests on " + activeParent + ", not on " + snapshot.parent());
        }
        final long[] held = layers.heldClusters(null);
        if (snapshot.dataClusters() >= 0 && (held == null || held[0] != snapshot.dataClusters()
            || held[1] != snapshot.zeroClusters())) {
            throw new Refused(REP_ERR_INVALID, "snapshot '" + snapshot.name() + "' of '" + name + "' arrived"
                + " incomplete: the layer here holds " + (held == null ? "no map" : held[0] + " data and " + held[1]
                + " zero clusters") + ", the source's " + snapshot.dataClusters() + " and " + snapshot.zeroClusters()
                + "; refused");
        }
        try {
            volume.flusher().syncNow();
            layers.createSnapshot(snapshot.name(), java.time.Instant.parse(snapshot.created()));
        } catch (final io.nbdtail.layer.SnapshotException e) {
            throw new Refused(REP_ERR_INVALID, "cannot seal snapshot '" + snapshot.name() + "' of '" + name
                + "' here: " + e.getMessage());
        }
        LOG.info("mirror of {}: snapshot {} sealed (on {}, created {})", name, snapshot.name(), snapshot.parent(),
            snapshot.created());
        return reply("ok", true);
    }

    /** Before the commit record: the snapshot tree built here is the one the source declared. */
    private void checkTree(final String name, final LayeredDevice layers, final JsonNode request) throws Exception {
        final List<SnapshotLayer> declared = new ArrayList<>();
        for (final JsonNode s : request.path("snapshots")) {
            final SnapshotLayer l = json.treeToValue(s, SnapshotLayer.class);
            declared.add(new SnapshotLayer(l.name(), l.parent(), l.created(), -1, -1));
        }
        final List<SnapshotLayer> here = tree(layers.snapshots());
        final Manifest m = layers.manifest();
        final String topHere = m == null ? null : m.layer(m.active().parent()).snapshot();
        final String topThere = request.path("topParent").isTextual() ? request.path("topParent").asText() : null;
        if (!new java.util.HashSet<>(here).equals(new java.util.HashSet<>(declared)) || here.size() != declared.size()
            || !java.util.Objects.equals(topHere, topThere)) {
            throw new Refused(REP_ERR_POLICY, "the snapshots of '" + name + "' here are not the source's; the cutover"
                + " is refused and the source keeps the volume. Here: " + describe(here, topHere) + "; source: "
                + describe(declared, topThere));
        }
    }

    private static String describe(final List<SnapshotLayer> tree, final String top) {
        final StringBuilder out = new StringBuilder();
        for (final SnapshotLayer l : tree) {
            out.append(l.name()).append(l.parent() == null ? "" : " on " + l.parent()).append(" (")
                .append(l.created()).append("), ");
        }
        return out.append("live disc on ").append(top).toString();
    }

    private Result resolve(final String name, final Ownership owner, final JsonNode request) throws Exception {
        final String session = request.path("session").asText();
        final long epoch = request.path("epoch").asLong();
        if (owner.served() && owner.epoch() == epoch && session.equals(owner.session())) {
            return reply("owned", true);
        }
        if (owner.state().equals(Ownership.RECEIVING) && session.equals(owner.session())) {
            // From now on this session can never commit: the source may safely serve again.
            volumes.recordOwnership(name, owner.cancel());
            LOG.warn("volume {}: cutover of session {} resolved as not taken; the session is cancelled", name,
                session);
        }
        return reply("owned", false);
    }

    private Result reply(final String field, final Object value) throws IOException {
        final ObjectNode node = json.createObjectNode();
        node.putPOJO(field, value);
        return new Result(json.writeValueAsBytes(node), null);
    }

    // ----------------------------------------------------------------------------------------------- source

    /** What {@code POST /v1/volumes/{name}/mirror} asks for. */
    public record Request(String destination, String token, long bytesPerSecond, Long convergeMillis) {
    }

    /**
     * Starts mirroring {@code name}; returns once the destination accepted (then the mirror runs in the
     * background).
     *
     * @throws MirrorRefusedException the destination refused: final.
     * @throws IOException            the destination could not be reached: final for this request.
     * @throws IllegalStateException  a mirror of the volume is already running.
     */
    public MirrorStatus start(final String name, final Request request) throws Exception {
        final InetSocketAddress destination = parseAddress(request.destination());
        synchronized (lock(name)) {
            final Export export = volumes.served(name);
            final MirrorJob running = jobs.get(name);
            if (running != null && !running.status().done()) {
                throw new IllegalStateException("a mirror of '" + name + "' is already running; see GET /v1/volumes/"
                    + name + "/mirror, or abort it first");
            }
            final Volume volume = export.volume();
            final LayeredDevice layers = volume.layers();
            if (layers == null) {
                throw new VolumeException(VolumeException.Code.CONFLICT, "'" + name + "' is a snapshot; mirror the"
                    + " volume");
            }
            // The snapshot tree must stay as it is while it is copied: no snapshot taken, deleted or rolled back.
            try {
                layers.holdChain("being mirrored to " + request.destination());
            } catch (final io.nbdtail.layer.SnapshotException e) {
                throw VolumeService.snapshotError(e);
            }
            boolean started = false;
            try {
                final SnapshotLayer.Plan plan = SnapshotLayer.plan(layers);
                final MirrorStatus status = startJob(name, request, destination, volume, plan);
                started = true;
                jobs.get(name).done().whenComplete((s, e) -> {
                    // A moved volume is fenced for good; its chain stays held.
                    if (s == null || !s.state().equals("moved")) {
                        layers.releaseChain();
                    }
                });
                return status;
            } finally {
                if (!started) {
                    layers.releaseChain();
                }
            }
        }
    }

    private MirrorStatus startJob(final String name, final Request request, final InetSocketAddress destination,
                                  final Volume volume, final SnapshotLayer.Plan plan) throws Exception {
        final Ownership owner = volumes.ownership(name);
        final MirrorSession session = new MirrorSession(name, volume.metadata().id(), UUID.randomUUID()
            .toString(), volume.size(), owner.epoch(), plan.snapshots(), plan.topParent());
        final MirrorConfig config = defaults.copy();
        config.bytesPerSecond = request.bytesPerSecond();
        if (request.convergeMillis() != null) {
            config.convergeMillis = request.convergeMillis();
        }
        config.validate();
        final NbdMirrorTarget target = new NbdMirrorTarget(group(), destination, request.token(),
            config.requestTimeoutMillis, owner.serviceAddress(), sourceTls);
        final MirrorJob job = new MirrorJob(volume, session, request.destination(), target, new Hooks(name),
            config);
        job.start();
        jobs.put(name, job);
        LOG.info("mirror of {} to {} started (session {})", name, request.destination(), session.sessionId());
        return job.status();
    }

    private static InetSocketAddress parseAddress(final String address) {
        if (address == null) {
            throw new IllegalArgumentException("destination is required as HOST:PORT (the destination tail's NBD"
                + " listener)");
        }
        final int colon = address.lastIndexOf(':');
        if (colon <= 0) {
            throw new IllegalArgumentException("destination '" + address + "' is not HOST:PORT");
        }
        final String host = address.substring(0, colon).replace("[", "").replace("]", "");
        final int port;
        try {
            port = Integer.parseInt(address.substring(colon + 1));
        } catch (final NumberFormatException e) {
            throw new IllegalArgumentException("destination '" + address + "' has no valid port");
        }
        return new InetSocketAddress(host, port);
    }

    public MirrorJob job(final String name) {
        return jobs.get(name);
    }

    public List<MirrorStatus> list() {
        final List<MirrorStatus> list = new ArrayList<>();
        for (final MirrorJob job : jobs.values()) {
            list.add(job.status());
        }
        list.sort((a, b) -> a.volume().compareTo(b.volume()));
        return list;
    }

    /**
     * Settles a cutover whose outcome is unknown: that of a running job, or (after a restart) a volume left
     * "handing over".
     *
     * @param moved the destination owns the volume (check it there first); {@code false}: the source keeps it.
     * @return whether there was anything to resolve.
     */
    public boolean resolve(final String name, final boolean moved) throws VolumeException {
        synchronized (lock(name)) {
            final MirrorJob job = jobs.get(name);
            if (job != null && job.resolve(moved)) {
                return true;
            }
            final Ownership owner = volumes.ownership(name);
            if (!owner.state().equals(Ownership.HANDING_OVER)) {
                return false;
            }
            if (moved) {
                volumes.recordOwnership(name, owner.with(Ownership.MOVED, owner.epoch() + 1, owner.peer()));
            } else {
                volumes.recordOwnership(name, owner.with(Ownership.SERVING, owner.epoch(), null));
                volumes.adopt(name);
            }
            LOG.warn("volume {}: hand-over resolved by the operator: {}", name, moved ? "moved" : "serving here");
            return true;
        }
    }

    /** The source's cutover steps for one volume. */
    private final class Hooks implements CutoverHooks {
        private final String name;

        Hooks(final String name) {
            this.name = name;
        }

        @Override
        public void recordHandingOver(final long epoch, final String destination) throws Exception {
            // The stored epoch stays the old one until the move is certain.
            volumes.recordOwnership(name, volumes.ownership(name).with(Ownership.HANDING_OVER, epoch - 1,
                destination));
        }

        @Override
        public void recordServing() throws Exception {
            final Ownership owner = volumes.ownership(name);
            volumes.recordOwnership(name, owner.with(Ownership.SERVING, owner.epoch(), null));
        }

        @Override
        public void recordMoved(final long epoch, final String destination) throws Exception {
            volumes.recordOwnership(name, volumes.ownership(name).with(Ownership.MOVED, epoch, destination));
        }

        @Override
        public void closeClients() {
            final ServiceAddresses a = addresses;
            if (a != null) {
                a.volumeWithdrawn(name);
            }
            volumes.withdraw(name);
        }
    }

    static String sha256(final String text) {
        try {
            return HexFormat.of().formatHex(MessageDigest.getInstance("SHA-256")
                .digest(text.getBytes(StandardCharsets.UTF_8)));
        } catch (final NoSuchAlgorithmException e) {
            throw new IllegalStateException(e);
        }
    }

    /** Running mirrors are aborted (the source keeps serving); unknown cutovers stay recorded on disc. */
    @Override
    public void close() {
        for (final Map.Entry<String, MirrorJob> e : jobs.entrySet()) {
            e.getValue().abort();
        }
        for (final MirrorJob job : jobs.values()) {
            try {
                job.done().get(5, TimeUnit.SECONDS);
            } catch (final Exception ignored) {
                // reported by the job itself
            }
        }
        peerThreads.shutdownNow();
        final EventLoopGroup g = clientGroup;
        if (g != null) {
            g.shutdownGracefully(0, 1, TimeUnit.SECONDS);
        }
    }
}
