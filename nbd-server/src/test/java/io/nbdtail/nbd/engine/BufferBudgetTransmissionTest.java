package io.nbdtail.nbd.engine;

import io.nbdtail.nbd.codec.NbdRequestDecoder;
import io.nbdtail.nbd.protocol.NbdCommand;
import io.nbdtail.nbd.protocol.NbdRequest;
import io.nbdtail.volume.Volume;
import io.netty.buffer.Unpooled;
import io.netty.channel.embedded.EmbeddedChannel;
import org.junit.jupiter.api.Test;
import org.junit.jupiter.api.io.TempDir;

import java.nio.file.Path;

import static io.nbdtail.nbd.engine.NbdTestSupport.clientFlags;
import static io.nbdtail.nbd.engine.NbdTestSupport.infoData;
import static io.nbdtail.nbd.engine.NbdTestSupport.option;
import static io.nbdtail.nbd.engine.NbdTestSupport.pattern;
import static io.nbdtail.nbd.engine.NbdTestSupport.request;
import static io.nbdtail.nbd.protocol.NbdConstants.CLIENT_FLAG_FIXED_NEWSTYLE;
import static io.nbdtail.nbd.protocol.NbdConstants.CLIENT_FLAG_NO_ZEROES;
import static io.nbdtail.nbd.protocol.NbdConstants.OPT_GO;
import static io.nbdtail.nbd.protocol.NbdConstants.REP_ACK;
import static org.assertj.core.api.Assertions.assertThat;

/**
 * The server-wide buffer budget in the transmission phase, at its smallest (one 1 MiB request): requests that
 * wait for it must never wait for bytes their own connection holds, and reading must stay off while a payload
 * waits, whatever the timeouts.
 */
class BufferBudgetTransmissionTest {
    private static final int MIB = 1 << 20;

    @TempDir
    Path dir;

    private NbdServerContext context;

    private NbdTestSupport.Peer open(final boolean timeouts) throws Exception {
        final Volume volume = NbdTestSupport.openVolume(dir, "disk", "d");
        final SimpleExportRegistry registry = new SimpleExportRegistry();
        registry.add(Export.of(volume));
        final NbdServerConfig config = new NbdServerConfig();
        config.maxPayload = MIB;
        config.maxBufferedBytes = MIB;
        if (!timeouts) {
            config.requestTimeoutMillis = 0;
            config.idleTimeoutMillis = 0;
        }
        context = new NbdServerContext(config.conclude(), registry, Runnable::run);
        final NbdTestSupport.Peer peer = new NbdTestSupport.Peer(new EmbeddedChannel(new NbdHandshakeHandler(context)));
        peer.greeting();
        peer.send(clientFlags(CLIENT_FLAG_FIXED_NEWSTYLE | CLIENT_FLAG_NO_ZEROES));
        peer.send(option(OPT_GO, infoData("disk")));
        NbdTestSupport.OptionReply reply;
        do {
            reply = peer.optionReply();
        } while (reply.type() != REP_ACK);
        return peer;
    }

    @Test
    void aReadNeverWaitsForBytesItsOwnConnectionHoldsBehindIt() throws Exception {
        final NbdTestSupport.Peer peer = open(true);
        final int read = NbdCommand.READ.type();
        // READ 1 takes the whole budget; READ 2 must wait; WRITE 3, decoded from the same bytes, holds 4 KiB
        // behind READ 2. Once READ 1 is answered, READ 2 must go even though 4 KiB are held.
        peer.send(request(0, read, 1, 0, MIB), request(0, read, 2, MIB, MIB),
            request(0, NbdCommand.WRITE.type(), 3, 2 * MIB, 4096, pattern(4096, 1)));
        for (int i = 0; i < 20; i++) {
            peer.channel.runPendingTasks();
            peer.channel.flush();
        }
        assertThat(peer.available()).as("three replies, two with 1 MiB of data").isEqualTo(3 * 16 + 2 * MIB);
        assertThat(context.buffers().used()).isZero();
        peer.channel.finishAndReleaseAll();
    }

    @Test
    void readingStaysOffWhileAPayloadWaitsEvenWithoutTimeouts() throws Exception {
        final NbdTestSupport.Peer peer = open(false);
        context.buffers().reserve(MIB); // held elsewhere
        peer.channel.writeInbound(Unpooled.wrappedBuffer(request(0, NbdCommand.WRITE.type(), 3, 2 * MIB, 8192,
            new byte[100])));
        final NbdRequestDecoder decoder = peer.channel.pipeline().get(NbdRequestDecoder.class);
        assertThat(decoder.awaitingBuffer()).isTrue();
        assertThat(peer.channel.config().isAutoRead()).isFalse();
        // Another request completes on this connection, and the handler decides about reading again.
        peer.channel.pipeline().context("nbd-request-decoder").fireChannelRead(
            NbdRequest.newInstance(0, NbdCommand.FLUSH.type(), 9, 0, 0, null, false));
        peer.channel.runPendingTasks();
        assertThat(decoder.awaitingBuffer()).isTrue();
        assertThat(peer.channel.config().isAutoRead()).as("reading stays off while the payload waits").isFalse();
        context.buffers().release(MIB);
        peer.channel.runPendingTasks();
        assertThat(decoder.awaitingBuffer()).isFalse();
        assertThat(peer.channel.config().isAutoRead()).isTrue();
        peer.channel.finishAndReleaseAll();
    }
}
