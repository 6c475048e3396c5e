package io.nbdtail.nbd.engine;

import com.code_intelligence.jazzer.junit.FuzzTest;
import io.nbdtail.nbd.codec.NbdRequestDecoder;
import io.nbdtail.volume.Volume;
import io.netty.buffer.Unpooled;
import io.netty.channel.embedded.EmbeddedChannel;
import org.junit.jupiter.api.AfterAll;
import org.junit.jupiter.api.BeforeAll;

import java.nio.file.Files;
import java.nio.file.Path;
import java.util.Arrays;
import java.util.Comparator;
import java.util.stream.Stream;

/**
 * Coverage-guided fuzzing (Jazzer) of what a client controls: the handshake (and, through GO or EXPORT_NAME,
 * the transmission phase behind it), and the transmission phase on its own. Reliability.md P13.
 *
 * <p>Input layout: byte 0 is a control byte, the rest is the byte stream a client sends after the greeting,
 * delivered in chunks whose size comes from the control byte (1 byte at a time up to everything at once), so
 * that every way a stream can be split is reachable. For {@link #transmission} the control byte also picks
 * structured replies and the base:allocation context.
 *
 * <p>Both targets hold the server to: no exception ever reaches the end of the pipeline (a handler that lets one
 * escape would tear down the connection the hard way, or worse, the listener: nbd-server's CVE-2013-7441), no
 * allocation sized by the client (the fuzzer's -rss_limit catches those), no hang, and no leaked buffer (the
 * suite runs with paranoid leak detection and {@code LeakCheckExtension}).
 *
 * <p>Without {@code JAZZER_FUZZ} these run as regression tests on the seeds and past findings in
 * {@code src/test/resources/io/nbdtail/nbd/engine/NbdFuzzTestInputs/<method>/}; {@code bin/fuzz} runs the fuzzer
 * (short in CI, longer by hand) and a crash it finds is written there, so it becomes a regression test.
 */
class NbdFuzzTest {
    private static Path dir;
    private static Volume volume;
    private static NbdServerContext context;
    private static Export export;

    @BeforeAll
    static void open() throws Exception {
        dir = Files.createTempDirectory("nbdtail-fuzz");
        volume = NbdTestSupport.openVolume(dir, "disk", "fuzz disk");
        final SimpleExportRegistry registry = new SimpleExportRegistry();
        export = Export.of(volume);
        registry.add(export);
        final NbdServerConfig config = new NbdServerConfig().conclude();
        context = new NbdServerContext(config, registry, Runnable::run);
    }

    @AfterAll
    static void close() throws Exception {
        volume.close();
        try (Stream<Path> files = Files.walk(dir)) {
            files.sorted(Comparator.reverseOrder()).forEach(p -> p.toFile().delete());
        }
    }

    @FuzzTest(maxDuration = "10m")
    void handshake(final byte[] input) {
        if (input.length == 0) {
            return;
        }
        feed(new EmbeddedChannel(new NbdHandshakeHandler(context)), input);
    }

    @FuzzTest(maxDuration = "10m")
    void transmission(final byte[] input) {
        if (input.length == 0) {
            return;
        }
        final boolean structured = (input[0] & 0x40) != 0;
        // Every context the export offers (base:allocation, qemu:allocation-depth), or none.
        final java.util.List<MetaContext> contexts = (input[0] & 0x80) != 0 ? MetaContext.offeredBy(export.volume())
            : java.util.List.of();
        final NbdSession session = new NbdSession(export, structured, export.transmissionFlags(structured), contexts,
            "fuzz");
        final NbdServerConfig config = context.config();
        feed(new EmbeddedChannel(new NbdRequestDecoder(config.maxPayload, config.maxDiscardedPayload),
            new NbdTransmissionHandler(context, session)), input);
    }

    /** Delivers input[1..] in chunks and runs what the event loop would run; then closes and frees everything. */
    private static void feed(final EmbeddedChannel channel, final byte[] input) {
        final int chunk = switch (input[0] & 0x3) {
            case 0 -> 1;
            case 1 -> 7;
            case 2 -> 512;
            default -> Integer.MAX_VALUE;
        };
        try {
            for (int at = 1, end; at < input.length && channel.isOpen(); at = end) {
                end = (int) Math.min(input.length, (long) at + chunk);
                final byte[] part = Arrays.copyOfRange(input, at, end);
                // Throws if an exception reached the end of the pipeline.
                channel.writeInbound(Unpooled.wrappedBuffer(part));
                channel.runPendingTasks();
                channel.releaseOutbound();
            }
            channel.runPendingTasks();
            channel.checkException();
        } finally {
            channel.finishAndReleaseAll();
        }
    }
}
