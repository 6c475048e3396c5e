package io.nbdtail.server;

import com.fasterxml.jackson.databind.JsonNode;
import com.fasterxml.jackson.databind.ObjectMapper;
import com.fasterxml.jackson.databind.node.ObjectNode;
import io.nbdtail.nbd.client.NbdClient;
import io.nbdtail.nbd.client.NbdClientException;
import io.nbdtail.nbd.protocol.NbdConstants;
import io.nbdtail.nbd.tls.ClientTls;
import io.nbdtail.replication.MirrorRefusedException;
import io.nbdtail.replication.MirrorSession;
import io.nbdtail.replication.MirrorTarget;
import io.nbdtail.replication.SnapshotLayer;
import io.nbdtail.volume.VolumeService;
import io.netty.buffer.Unpooled;
import io.netty.channel.EventLoopGroup;

import java.io.IOException;
import java.net.InetSocketAddress;
import java.nio.ByteBuffer;
import java.util.ArrayList;
import java.util.List;
import java.util.concurrent.CompletableFuture;

import static io.nbdtail.nbd.protocol.NbdConstants.OPT_NBDTAIL_MIRROR;

/**
 * A destination tail reached over NBD: the hello, commit and resolve requests travel as nbdtail's mirror option
 * in the handshake (JSON, authenticated with the shared token); the data travels as ordinary NBD writes and
 * zeroes on the connection the hello opened, so the receiving export is written by nothing else. With TLS
 * ({@code mirror.tls}), every one of these connections starts with STARTTLS.
 */
final class NbdMirrorTarget implements MirrorTarget {
    private final EventLoopGroup group;
    private final InetSocketAddress address;
    private final String token;
    private final long timeoutMillis;
    private final String serviceAddress;
    private final ClientTls tls;
    private final ObjectMapper json = VolumeService.mapper();

    NbdMirrorTarget(final EventLoopGroup group, final InetSocketAddress address, final String token,
                    final long timeoutMillis, final String serviceAddress, final ClientTls tls) {
        this.group = group;
        this.address = address;
        this.token = token == null ? "" : token;
        this.timeoutMillis = timeoutMillis;
        this.serviceAddress = serviceAddress;
        this.tls = tls;
    }

    private ObjectNode request(final String op, final MirrorSession session, final long epoch) {
        final ObjectNode node = json.createObjectNode();
        node.put("op", op);
        node.put("volume", session.volume());
        node.put("volumeId", session.volumeId().toString());
        node.put("session", session.sessionId());
        node.put("size", session.size());
        node.put("epoch", epoch);
        node.put("token", token);
        if (serviceAddress != null && op.equals("hello")) {
            node.put("serviceAddress", serviceAddress);
        }
        if (session.layered() && (op.equals("hello") || op.equals("commit"))) {
            // The whole tree, so the destination can check what it built before it takes the volume.
            node.set("snapshots", json.valueToTree(session.snapshots()));
            node.put("topParent", session.topParent());
        }
        return node;
    }

    private NbdClient.Options options(final ObjectNode request, final boolean optionsOnly) throws IOException {
        final NbdClient.Options options = new NbdClient.Options();
        options.exportName = request.path("volume").asText();
        options.extraOptions = List.of(new NbdClient.ExtraOption(OPT_NBDTAIL_MIRROR, json.writeValueAsBytes(request)));
        options.optionsOnly = optionsOnly;
        options.requestTimeoutMillis = timeoutMillis;
        options.connectTimeoutMillis = Math.min(timeoutMillis, 15_000);
        options.tls = tls;
        return options;
    }

    /**
     * A refusal is final (a wrong secret, size or volume, a policy); a fault on the destination's side
     * ({@code ERR_PLATFORM}, {@code ERR_SHUTDOWN}: a disc error, a server stopping) is retried like a broken link.
     */
    private static IOException translate(final NbdClientException e) {
        // A refusal (of an option, STARTTLS included) or a failed TLS handshake is an answer: final. A fault on
        // the destination's side is not.
        final int reply = e.optionReply();
        return reply != 0 && reply != NbdConstants.REP_ERR_PLATFORM && reply != NbdConstants.REP_ERR_SHUTDOWN
            || e.tlsRefused()
            ? new MirrorRefusedException("the destination refused: " + e.getMessage(), e) : e;
    }

    private JsonNode ask(final String op, final MirrorSession session, final long epoch)
        throws IOException, InterruptedException {
        return ask(request(op, session, epoch));
    }

    private JsonNode ask(final ObjectNode request) throws IOException, InterruptedException {
        final String op = request.path("op").asText();
        final NbdClient client;
        try {
            client = NbdClient.connect(group, address, options(request, true));
        } catch (final NbdClientException e) {
            throw translate(e);
        }
        if (client.extraReplies().isEmpty()) {
            throw new IOException("no answer to the mirror " + op + " from " + address);
        }
        return json.readTree(client.extraReplies().getFirst());
    }

    @Override
    public Connection connect(final MirrorSession session) throws IOException, InterruptedException {
        final NbdClient client;
        try {
            client = NbdClient.connect(group, address, options(request("hello", session, session.epoch()), false));
        } catch (final NbdClientException e) {
            throw translate(e);
        }
        if (client.extraReplies().isEmpty()) {
            client.abort();
            throw new MirrorRefusedException(address + " is an NBD server but not an nbdtail that receives mirrors");
        }
        final JsonNode hello = json.readTree(client.extraReplies().getFirst());
        if (client.size() != session.size()) {
            client.abort();
            throw new MirrorRefusedException("size mismatch: the destination serves " + client.size() + " bytes, the"
                + " source has " + session.size());
        }
        final boolean resumable = hello.path("resumable").asBoolean();
        final boolean empty = hello.path("empty").asBoolean();
        final List<SnapshotLayer> sealed = new ArrayList<>();
        for (final JsonNode s : hello.path("snapshots")) {
            sealed.add(json.treeToValue(s, SnapshotLayer.class));
        }
        return new Connection() {
            @Override
            public boolean resumable() {
                return resumable;
            }

            @Override
            public boolean empty() {
                return empty;
            }

            @Override
            public List<SnapshotLayer> sealed() {
                return sealed;
            }

            @Override
            public CompletableFuture<Void> write(final long offset, final ByteBuffer data) {
                return client.write(offset, Unpooled.wrappedBuffer(data), false);
            }

            @Override
            public CompletableFuture<Void> zero(final long offset, final long length) {
                return client.writeZeroes(offset, length, false);
            }

            @Override
            public CompletableFuture<Void> flush() {
                return client.flush();
            }

            @Override
            public void close() {
                client.close();
            }
        };
    }

    @Override
    public void commit(final MirrorSession session, final long epoch) throws IOException, InterruptedException {
        final JsonNode answer = ask("commit", session, epoch);
        if (answer.path("epoch").asLong(-1) != epoch) {
            throw new IOException("unexpected answer to the cutover: " + answer);
        }
    }

    @Override
    public void startLayer(final MirrorSession session, final String parent) throws IOException, InterruptedException {
        final ObjectNode request = request("layer", session, session.epoch());
        request.put("parent", parent);
        if (!ask(request).path("ok").asBoolean()) {
            throw new IOException("unexpected answer to the start of a layer on " + parent);
        }
    }

    @Override
    public void seal(final MirrorSession session, final SnapshotLayer snapshot)
        throws IOException, InterruptedException {
        final ObjectNode request = request("seal", session, session.epoch());
        request.set("snapshot", json.valueToTree(snapshot));
        if (!ask(request).path("ok").asBoolean()) {
            throw new IOException("unexpected answer to the seal of snapshot " + snapshot.name());
        }
    }

    @Override
    public boolean resolve(final MirrorSession session, final long epoch) throws IOException, InterruptedException {
        final JsonNode answer = ask("resolve", session, epoch);
        if (!answer.has("owned")) {
            throw new IOException("unexpected answer to resolve: " + answer);
        }
        return answer.path("owned").asBoolean();
    }
}
