package io.nbdtail.tools.it;

import io.nbdtail.testing.ExternalTool;
import org.junit.jupiter.api.Test;
import org.junit.jupiter.api.io.TempDir;

import java.nio.file.Files;
import java.nio.file.Path;
import java.util.ArrayList;
import java.util.List;
import java.util.Map;
import java.util.Random;
import java.util.concurrent.CompletableFuture;
import java.util.concurrent.TimeUnit;

import static org.assertj.core.api.Assertions.assertThat;

/**
 * Crash tests (reliability.md §6.1 C1, C2, C4, C6, C7): the real server as its own process, killed with
 * {@code kill -9} at random points of a random write/zero/trim/flush/snapshot/delete workload, and halted at each
 * metadata step through fault points (production never enables them). After every crash, {@code nbdtail check}
 * must report at most leaks, and after the restart every flushed (or FUA-written, or snapshotted) block must
 * read back: {@code crash_round.py} keeps the model between rounds.
 *
 * <p>{@code -Dnbdtail.crash.rounds=N} sets the number of random kills (default 6; {@code tools/bench/crash-test.sh}
 * runs hundreds).
 */
class CrashIT {
    private static final long SIZE = 4L << 20;
    /** Every metadata step a crash can interrupt, with how often it is reached before the crash. */
    private static final List<String> FAULT_POINTS = List.of(
        "cow.data-written:3", "sync.captured:2", "sync.data-synced:2", "map.page-write:2", "map.before-sync:2",
        "map.synced:2", "layer.created:1", "snapshot.synced:1", "manifest.temp-written:2", "manifest.renamed:2",
        "manifest.dir-synced:2", "delete.pending-recorded:1", "delete.merged:1", "delete.committed:1");

    @TempDir
    Path dir;

    private Path data() {
        return dir.resolve("data");
    }

    private Path state() {
        return dir.resolve("model.json");
    }

    /** Runs one round of the workload against {@code server}; returns its output once it ends. */
    private CompletableFuture<ExternalTool.Result> round(final ServerProcess server, final long seed,
                                                         final double seconds) {
        return CompletableFuture.supplyAsync(() -> ExternalTool.run(Map.of("PYTHONDONTWRITEBYTECODE", "1"), 300,
            ExternalTool.PYTHON, Path.of("src/test/python/crash_round.py").toString(), state().toString(),
            server.uri(""), "crash", server.apiUrl(), data().resolve("api-token").toString(),
            Long.toString(seed), Double.toString(seconds)));
    }

    /** Exit 3: the crash came while the round was still verifying the previous one; the next round does it. */
    private static void assertVerified(final ExternalTool.Result r, final String when) {
        assertThat(r.exitCode()).as(when + ":\n" + r.output()).isIn(0, 3);
        assertThat(r.stdout()).as(when).containsAnyOf("ok ", "during verification");
    }

    /** Waits until the round has verified the last crash and started its workload. */
    private void awaitVerified(final CompletableFuture<ExternalTool.Result> workload) throws Exception {
        final Path marker = Path.of(state() + ".verified");
        for (int i = 0; i < 1200 && !Files.exists(marker) && !workload.isDone(); i++) {
            Thread.sleep(50);
        }
        Files.deleteIfExists(marker);
    }

    /** Offline check after a crash: corruption fails the test; leaks are allowed (and repaired). */
    private void check(final String when) {
        final ExternalTool.Result r = ServerProcess.cli("check", "crash", "--data-dir", data().toString());
        assertThat(r.exitCode()).as(when + ": nbdtail check\n" + r.output()).isIn(0, 3);
        if (r.exitCode() == 3) {
            assertThat(ServerProcess.cli("check", "crash", "--repair", "--data-dir", data().toString()).exitCode())
                .as(when + ": check --repair").isZero();
        }
    }

    private void create() {
        ServerProcess.cli("volume", "create", "crash", "--size", Long.toString(SIZE), "--data-dir",
            data().toString()).assertSuccess();
    }

    @Test
    void killedAtRandomPointsLosesNothingFlushed() throws Exception {
        create();
        final int rounds = Integer.getInteger("nbdtail.crash.rounds", 6);
        final Random random = new Random(Long.getLong("nbdtail.crash.seed", 20261123L));
        for (int i = 0; i < rounds; i++) {
            final Path log = dir.resolve("server-" + i + ".log");
            try (ServerProcess server = ServerProcess.start(data(), log)) {
                final CompletableFuture<ExternalTool.Result> workload = round(server, random.nextLong(), 30);
                awaitVerified(workload);
                Thread.sleep(200 + random.nextInt(2500));
                server.kill9();
                assertVerified(workload.get(120, TimeUnit.SECONDS), "round " + i + " (seed "
                    + System.getProperty("nbdtail.crash.seed", "default") + ")");
            }
            check("after kill " + i);
        }
        finalVerification();
    }

    @Test
    void haltedAtEveryMetadataStepLosesNothingFlushed() throws Exception {
        create();
        final Random random = new Random(7);
        final List<String> notReached = new ArrayList<>();
        for (final String point : FAULT_POINTS) {
            final Path log = dir.resolve("server-" + point.replace(':', '-') + ".log");
            final String name = point.substring(0, point.indexOf(':'));
            final ServerProcess server;
            try {
                server = ServerProcess.start(data(), log, List.of("-Dnbdtail.test.faults=" + name + "=halt:"
                    + point.substring(point.indexOf(':') + 1)));
            } catch (final AssertionError e) {
                // Reached while opening the volumes: finishing the delete an earlier crash interrupted.
                assertThat(Files.readString(log)).as(e.getMessage()).contains("crash point " + name);
                check("after a crash at " + point + " during start-up");
                continue;
            }
            try (server) {
                final CompletableFuture<ExternalTool.Result> workload = round(server, random.nextLong(), 20);
                final int exit = server.exitCodeWithin(25);
                if (exit != 137) {
                    notReached.add(point);
                    server.kill9();
                } else {
                    assertThat(server.logText()).contains("crash point " + name);
                }
                assertVerified(workload.get(120, TimeUnit.SECONDS), "crash at " + point);
            }
            check("after crash at " + point);
        }
        finalVerification();
        assertThat(notReached).as("fault points the workload never reached").isEmpty();
    }

    private void finalVerification() throws Exception {
        try (ServerProcess server = ServerProcess.start(data(), dir.resolve("server-final.log"))) {
            final ExternalTool.Result r = round(server, 1, 0).get(120, TimeUnit.SECONDS);
            assertThat(r.exitCode()).as("final verification:\n" + r.output()).isZero();
        }
        assertThat(Files.exists(state())).isTrue();
    }
}
