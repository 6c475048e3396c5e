package io.nbdtail.tools.online;

import picocli.AutoComplete;
import picocli.CommandLine.Command;
import picocli.CommandLine.Model.CommandSpec;
import picocli.CommandLine.Spec;

import java.util.concurrent.Callable;

/** {@code nbdtail completion}: a bash completion script for every command and option. */
@Command(name = "completion", mixinStandardHelpOptions = true,
    description = {"Print a bash completion script for nbdtail.",
        "Try it with: source <(nbdtail completion); install it with:",
        "  nbdtail completion > /etc/bash_completion.d/nbdtail"})
public final class CompletionCommand implements Callable<Integer> {
    @Spec
    private CommandSpec spec;

    @Override
    public Integer call() {
        spec.commandLine().getOut().print(AutoComplete.bash("nbdtail", spec.root().commandLine()));
        spec.commandLine().getOut().flush();
        return 0;
    }
}
