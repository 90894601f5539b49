mod descriptor;
